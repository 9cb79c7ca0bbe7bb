"""A queue, pods that take time to start, and a scaler, on a 0.1 s clock that skips the quiet stretches.

Pods have ``concurrency`` slots and serve the queue first come, first served. A new pod is useful only
after ``startup_seconds`` (pod start plus model load). A pod being removed takes no new task, finishes
what it holds (the worker's drain), then goes; it costs replica-seconds until then. Which pod goes:
Swell marks idle pods with a low deletion cost, so the idlest go first; for the baselines the
ReplicaSet controller's default order applies, which ignores work in flight (we take the newest pod).

Time advances in ``STEP`` ticks; a tick where nothing can happen (no arrival, completion, pod becoming
ready or scaler decision due) is skipped, which changes no result: replica-seconds accrue for the
skipped ticks, and every task is still queued and served on the first tick at or after its event.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

from bench.policy.policies import Scaler, Seen
from bench.policy.traces import DURATION, Trace

STEP = 0.1
DRAIN_SECONDS = 900.0  # after the trace: time to drain and scale back to zero


@dataclass
class Pod:
    created: float
    ready_at: float
    busy: int = 0
    leaving: bool = False


@dataclass
class Result:
    replica_seconds: float
    waits: list[float]
    scaling_actions: int
    unfinished: int


def simulate(
    trace: Trace, scaler: Scaler, *, concurrency: int, startup_seconds: float, drain_idle_first: bool
) -> Result:
    arrivals = deque(sorted(trace))
    queue: deque[tuple[float, float]] = deque()
    pods: list[Pod] = []
    finishing: list[tuple[float, int, Pod]] = []  # (finish time, tie-breaker, pod) of tasks in flight
    serial = 0
    waits: list[float] = []
    completed = in_flight = 0
    replica_seconds = 0.0
    actions = spec_replicas = 0
    next_decision = getattr(scaler, "phase", 0.0) * scaler.interval  # its loop started before the trace
    last_step = int((DURATION + DRAIN_SECONDS) / STEP)
    step = 0
    while step <= last_step:
        now = step * STEP
        while arrivals and arrivals[0][0] <= now:
            queue.append(arrivals.popleft())
        gone = False
        while finishing and finishing[0][0] <= now:
            pod = heapq.heappop(finishing)[2]
            pod.busy -= 1
            completed += 1
            in_flight -= 1
            gone = gone or (pod.leaving and pod.busy == 0)
        if gone:
            pods = [p for p in pods if not (p.leaving and p.busy == 0)]
        if queue:
            for pod in pods:
                if pod.leaving or pod.ready_at > now:
                    continue
                while queue and pod.busy < concurrency:
                    arrived, service = queue.popleft()
                    waits.append(now - arrived)
                    pod.busy += 1
                    in_flight += 1
                    serial += 1
                    heapq.heappush(finishing, (now + service, serial, pod))
                if not queue:
                    break
        if now >= next_decision - 1e-9:
            serving = [p for p in pods if not p.leaving]
            seen = Seen(
                now=now,
                backlog=len(queue),
                in_flight=in_flight,
                completed_total=completed,
                replicas=spec_replicas,
                ready=sum(p.ready_at <= now for p in serving),
            )
            wanted = scaler.desired(seen)
            if wanted != spec_replicas:
                actions += 1
                spec_replicas = wanted
            next_decision = now + scaler.interval
            if len(serving) < spec_replicas:
                pods += [Pod(created=now, ready_at=now + startup_seconds) for _ in range(spec_replicas - len(serving))]
            elif len(serving) > spec_replicas:
                if drain_idle_first:
                    order = sorted(serving, key=lambda p: (p.busy, -p.created))
                else:  # ReplicaSet default: not-ready first, then the newest
                    order = sorted(serving, key=lambda p: (p.ready_at <= now, -p.created))
                for pod in order[: len(serving) - spec_replicas]:
                    pod.leaving = True
                pods = [p for p in pods if not (p.leaving and p.busy == 0)]
        if not arrivals and not queue and in_flight == 0 and not pods and now > DURATION:
            break
        # The next tick where anything can happen: an arrival, a completion, a pod ready, a decision.
        upcoming = [next_decision]
        if arrivals:
            upcoming.append(arrivals[0][0])
        if finishing:
            upcoming.append(finishing[0][0])
        if queue:
            upcoming += [p.ready_at for p in pods if p.ready_at > now and not p.leaving]
        following = max(step + 1, math.ceil(min(upcoming) / STEP - 1e-6))
        following = min(following, last_step + 1)
        replica_seconds += len(pods) * STEP * (following - step)
        step = following
    return Result(
        replica_seconds=replica_seconds, waits=waits, scaling_actions=actions, unfinished=len(queue) + len(arrivals)
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
