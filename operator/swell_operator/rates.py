"""Arrival and service rates from successive queue readings, pure like the decision it feeds.

Arrivals are not counted anywhere a worker could miss them, so they are inferred: what completed in an
interval plus how much the queue (backlog and in flight) grew. A replica's capacity comes from the mean
service time, by Little's law (tasks in flight = throughput x service time), times its concurrency:
unlike completions per replica, this is not biased low when the workers are not saturated. Without the
concurrency, the per-replica rate is sampled only while a backlog waits (the workers are saturated).
Both are smoothed with a time-based EWMA so uneven poll intervals weigh fairly. The service time is the
ratio of the smoothed work in flight to the smoothed completion rate, never a smoothed ratio: a second
with two completions and one with four are not a service time of 2 s and 1 s averaged (Jensen's
inequality made that estimate 20-30 % slow at 3 completions a second). Idle intervals carry no sample.

Arrivals are followed by a fast and a slow average. The fast one is reported unless it runs far above
the slow one while the latest interval brought little: that is a one-off batch, which is backlog (the
decision drains it within its target wait), and counting it as a lasting rate would keep replicas for
work that is not coming. A rate that falls, climbs or steps up and stays is followed at the fast pace.
A completion counter that goes backwards (Redis restarted) skips one sample instead of a negative rate.
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
FAST_ARRIVAL_SMOOTHING_SECONDS = 10.0
# The fast average is a burst, not a rate, when above BURST_RATIO x the slow one plus BURST_MARGIN tasks/s.
BURST_RATIO = 1.5
BURST_MARGIN = 0.5
# ... unless each of the last two intervals brought at least this share of the fast average: a step up
# in the rate (work that keeps coming), not a one-off batch followed by quiet.
SUSTAINED_SHARE = 0.5
SERVICE_SMOOTHING_SECONDS = 30.0
# The service time is reported once the averages have seen this many completions per slot of a pod: the
# first completions are the shortest tasks of those the pod took at once, and Little's law over one second
# with one of four tasks done read 4 s for tasks of 1 s (a pool scaled to 10 for a backlog 1 pod drained).
MEASURED_COMPLETIONS = 1
# A state written before the completion count was kept had its service time measured long before: it
# loads as having seen more completions than any pod has slots.
COMPLETIONS_OF_AN_EARLIER_STATE = 1 << 30
# A change of the work in flight between two readings beyond this share (and beyond one pod's slots) marks
# the interval as a transient that carries no service-time sample.
TRANSIENT_SHARE = 0.25


@dataclass(frozen=True)
class RateEstimator:
    last_time: float | None = None
    last_queued: int | None = None
    last_completed: int | None = None
    last_in_flight: int | None = None
    service_seconds: float | None = None
    arrival_rate: float | None = None
    service_rate_per_replica: float | None = None
    slow_arrival_rate: float | None = None
    fast_arrival_rate: float | None = None
    busy_average: float | None = None  # smoothed tasks in flight while work completes
    completion_average: float | None = None  # smoothed completions per second, same intervals
    last_arrivals: float | None = None  # the latest interval's arrivals per second
    service_sampled_seconds: float = 0.0  # how long the service averages have been sampled
    service_sampled_completions: int = 0  # completions they have seen (counted up to MEASURED_COMPLETIONS)

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
        if self.last_time is None or self.last_queued is None:
            return replace(
                self,
                last_time=now,
                last_queued=queued,
                last_completed=completed_total,
                last_in_flight=max(in_flight, 0),
            )
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
        slow = _smooth(self.slow_arrival_rate or 0.0, arrivals, elapsed, ARRIVAL_SMOOTHING_SECONDS)
        fast = _smooth(self.fast_arrival_rate or 0.0, arrivals, elapsed, FAST_ARRIVAL_SMOOTHING_SECONDS)
        service_rate, service_seconds = self.service_rate_per_replica, self.service_seconds
        busy_average, completion_average = self.busy_average, self.completion_average
        sampled, sampled_completions = self.service_sampled_seconds, self.service_sampled_completions
        busy = ((self.last_in_flight or 0) + max(in_flight, 0)) / 2
        # Little's law holds in a steady state: an interval in which the work in flight jumped (pods just
        # became ready and took a batch) says more about when the readings fell than about service times.
        jump = abs(max(in_flight, 0) - (self.last_in_flight or 0))
        settled = jump <= max(concurrency or 0, TRANSIENT_SHARE * max(in_flight, self.last_in_flight or 0))
        if concurrency is not None and completed is not None and settled and (completed or busy > 0):
            per_second = completed / elapsed
            if completion_average is None or busy_average is None:
                # Start at the first completion: the seconds before it would only say "slower than this".
                if completed:
                    busy_average, completion_average = busy, per_second
            else:
                busy_average = _smooth(busy_average, busy, elapsed, SERVICE_SMOOTHING_SECONDS, sampled)
                completion_average = _smooth(
                    completion_average, per_second, elapsed, SERVICE_SMOOTHING_SECONDS, sampled
                )
            if completion_average is not None:  # beyond a time constant the EWMA's own weight is larger
                sampled = min(sampled + elapsed, SERVICE_SMOOTHING_SECONDS)
                sampled_completions = min(sampled_completions + completed, MEASURED_COMPLETIONS * concurrency)
            if completion_average and busy_average and sampled_completions >= MEASURED_COMPLETIONS * concurrency:
                service_seconds = busy_average / completion_average
                service_rate = concurrency / service_seconds
        elif concurrency is None and completed and ready_replicas > 0 and backlog > 0:
            per_replica = completed / elapsed / ready_replicas
            service_rate = (
                per_replica
                if service_rate is None
                else _smooth(service_rate, per_replica, elapsed, SERVICE_SMOOTHING_SECONDS)
            )
        latest_two = min(arrivals, self.last_arrivals if self.last_arrivals is not None else 0.0)
        sustained = fast <= BURST_RATIO * slow + BURST_MARGIN or latest_two >= SUSTAINED_SHARE * fast
        rate = fast if sustained else slow
        return RateEstimator(
            last_time=now,
            last_queued=queued,
            last_completed=completed_total,
            last_in_flight=max(in_flight, 0),
            service_seconds=service_seconds,
            arrival_rate=rate,
            service_rate_per_replica=service_rate,
            slow_arrival_rate=slow,
            fast_arrival_rate=fast,
            busy_average=busy_average,
            completion_average=completion_average,
            last_arrivals=arrivals,
            service_sampled_seconds=sampled,
            service_sampled_completions=sampled_completions,
        )

    def saw_empty(self, at: float, concurrency: int | None) -> RateEstimator:
        """Fold in an empty queue seen at ``at`` without a reading (a sleeping pool's watch saw it).

        Readings of an empty queue fold into one (an EWMA of zeros over t1 then t2 is one over t1 + t2), so
        this is as if the pool had been read all along: a wake then measures its arrivals from the sighting,
        not spread over the minutes since its last reading, where any backlog looked like a batch that had
        landed at once. Nothing completes at zero replicas: the completion count carries over.
        """
        if self.last_time is not None and at <= self.last_time:
            return self
        return self.observe(at, 0, 0, self.last_completed, 0, concurrency)

    def to_json(self) -> dict[str, Any]:
        return {
            "lastTime": self.last_time,
            "lastQueued": self.last_queued,
            "lastCompleted": self.last_completed,
            "lastInFlight": self.last_in_flight,
            "serviceSeconds": self.service_seconds,
            "arrivalRate": self.arrival_rate,
            "serviceRatePerReplica": self.service_rate_per_replica,
            "slowArrivalRate": self.slow_arrival_rate,
            "fastArrivalRate": self.fast_arrival_rate,
            "busyAverage": self.busy_average,
            "completionAverage": self.completion_average,
            "lastArrivals": self.last_arrivals,
            "serviceSampledSeconds": self.service_sampled_seconds,
            "serviceSampledCompletions": self.service_sampled_completions,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RateEstimator:
        if not isinstance(data, Mapping):
            return cls()
        try:
            busy_average = _number(data.get("busyAverage"), float)
            # A state written before this field existed has averages long sampled.
            sampled = _number(data.get("serviceSampledSeconds"), float)
            completions = _number(data.get("serviceSampledCompletions"), int)
            if sampled is None:
                sampled = 0.0 if busy_average is None else SERVICE_SMOOTHING_SECONDS
            if completions is None:
                completions = 0 if data.get("serviceSeconds") is None else COMPLETIONS_OF_AN_EARLIER_STATE
            return cls(
                last_time=_number(data.get("lastTime"), float),
                last_queued=_number(data.get("lastQueued"), int),
                last_completed=_number(data.get("lastCompleted"), int),
                last_in_flight=_number(data.get("lastInFlight"), int),
                service_seconds=_number(data.get("serviceSeconds"), float),
                arrival_rate=_number(data.get("arrivalRate"), float),
                service_rate_per_replica=_number(data.get("serviceRatePerReplica"), float),
                slow_arrival_rate=_number(data.get("slowArrivalRate"), float),
                fast_arrival_rate=_number(data.get("fastArrivalRate"), float),
                busy_average=busy_average,
                completion_average=_number(data.get("completionAverage"), float),
                last_arrivals=_number(data.get("lastArrivals"), float),
                service_sampled_seconds=min(max(sampled, 0.0), SERVICE_SMOOTHING_SECONDS),
                service_sampled_completions=max(completions, 0),
            )
        except (TypeError, ValueError):
            return cls()


def _smooth(previous: float, sample: float, elapsed: float, time_constant: float, sampled: float = math.inf) -> float:
    """An EWMA that, while it has ``sampled`` less than its time constant, is the plain time-weighted mean
    of its samples: started from its first sample, it would carry that one sample's error for a time
    constant (a first second with one completion of four tasks in flight read as 4 s tasks for 30 s)."""
    weight = max(1.0 - math.exp(-elapsed / time_constant), elapsed / (sampled + elapsed))
    return previous + weight * (sample - previous)


def _number(value: Any, kind: type[N]) -> N | None:
    if value is None:
        return None
    number = kind(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number
