"""A queue, pods that take time to start, and a scaler: stepped in small time increments.

Pods have ``concurrency`` slots and serve the queue first come, first served. A new pod is useful only
after ``startup_seconds`` (pod start plus model load). A pod being removed takes no new task, finishes
what it holds (the worker's drain), then goes; it costs replica-seconds until then. Which pod goes:
Swell marks idle pods with a low deletion cost, so the idlest go first; for the baselines the
ReplicaSet controller's default order applies, which ignores work in flight (we take the newest pod).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

from bench.policy.policies import Scaler, Seen
from bench.policy.traces import DURATION, Trace

STEP = 0.1


@dataclass
class Pod:
    created: float
    ready_at: float
    finishing: list[float] = field(default_factory=list)  # heap of finish times of tasks in flight
    leaving: bool = False


@dataclass
class Result:
    replica_seconds: float
    waits: list[float]
    scaling_actions: int
    timeline: list[tuple[float, int, int, int]]  # (time, backlog, in flight, replicas)
    unfinished: int


def simulate(trace: Trace, scaler: Scaler, *, concurrency: int, startup_seconds: float,
             drain_idle_first: bool) -> Result:
    arrivals = deque(sorted(trace))
    queue: deque[tuple[float, float]] = deque()
    pods: list[Pod] = []
    waits: list[float] = []
    completed = 0
    replica_seconds = 0.0
    actions = 0
    spec_replicas = 0
    next_decision = 0.0
    timeline: list[tuple[float, int, int, int]] = []
    end = DURATION + 900.0  # time to drain and scale back to zero after the trace
    steps = int(end / STEP)
    for step in range(steps + 1):
        now = step * STEP
        while arrivals and arrivals[0][0] <= now:
            queue.append(arrivals.popleft())
        for pod in pods:
            while pod.finishing and pod.finishing[0] <= now:
                heapq.heappop(pod.finishing)
                completed += 1
        pods = [p for p in pods if not (p.leaving and not p.finishing)]
        for pod in pods:
            if pod.leaving or pod.ready_at > now:
                continue
            while queue and len(pod.finishing) < concurrency:
                arrived, service = queue.popleft()
                waits.append(now - arrived)
                heapq.heappush(pod.finishing, now + service)
        in_flight = sum(len(p.finishing) for p in pods)
        if now >= next_decision:
            serving = [p for p in pods if not p.leaving]
            seen = Seen(now=now, backlog=len(queue), in_flight=in_flight, completed_total=completed,
                        replicas=spec_replicas, ready=sum(p.ready_at <= now for p in serving))
            wanted = scaler.desired(seen)
            if wanted != spec_replicas:
                actions += 1
                spec_replicas = wanted
            next_decision = now + scaler.interval
            serving = [p for p in pods if not p.leaving]
            if len(serving) < spec_replicas:
                pods += [Pod(created=now, ready_at=now + startup_seconds) for _ in range(spec_replicas - len(serving))]
            elif len(serving) > spec_replicas:
                if drain_idle_first:
                    order = sorted(serving, key=lambda p: (len(p.finishing), -p.created))
                else:  # ReplicaSet default: not-ready first, then the newest
                    order = sorted(serving, key=lambda p: (p.ready_at <= now, -p.created))
                for pod in order[: len(serving) - spec_replicas]:
                    pod.leaving = True
        replica_seconds += len(pods) * STEP
        if step % 10 == 0:
            timeline.append((now, len(queue), in_flight, len(pods)))
        if not arrivals and not queue and in_flight == 0 and not pods and now > DURATION:
            break
    return Result(replica_seconds=replica_seconds, waits=waits, scaling_actions=actions, timeline=timeline,
                  unfinished=len(queue) + len(arrivals))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
