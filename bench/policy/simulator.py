"""A queue, pods that take time to start and to stop, and a scaler, on a 0.1 s clock that skips quiet stretches.

Pods have ``concurrency`` slots and serve the queue first come, first served. A new pod is useful only
after ``startup_seconds`` (pod start plus model load). A pod being removed takes no new task, finishes
what it holds (the worker's drain), then takes ``STOP_SECONDS`` to go; it costs replica-seconds until
then. A pod removed before it was ready goes only when its grace period ends (``UNSTARTED_STOP_SECONDS``):
the worker, PID 1 in its container, has no SIGTERM handler yet, so the kubelet's SIGTERM is ignored and
its SIGKILL comes after ``terminationGracePeriodSeconds`` (30 s by default). Unaware it is going, the
worker starts and takes tasks like any other until it is killed; the tasks it held then go back to the
head of the queue (another worker claims them) and their first wait does not count, their second does.
Both were measured on kind (bench/results/keda_side_by_side.json: idle ready pods went 2-3 s after their
Deployment shrank, pods cut while starting 28-33 s after, and meanwhile held more tasks than the ready
pods had slots). Which pod goes: the ReplicaSet controller removes pods that are not ready
first; among ready ones Swell marks idle pods with a low deletion cost, so the idlest go first; for the
baselines the controller's default order applies, which ignores work in flight (we take the newest pod).

Time advances in ``STEP`` ticks; a tick where nothing can happen (no arrival, completion, pod becoming
ready or going, or scaler decision due) is skipped, which changes no result: replica-seconds accrue for the
skipped ticks, and every task is still queued and served on the first tick at or after its event.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

from bench.policy.policies import Scaler, Seen
from bench.policy.traces import DURATION, Trace

STEP = 0.1
DRAIN_SECONDS = 900.0  # after the trace: time to drain and scale back to zero
STOP_SECONDS = 2.0  # from a removed pod's last task to its end (SIGTERM handled, container gone)
UNSTARTED_STOP_SECONDS = 30.0  # a pod removed before ready: its terminationGracePeriodSeconds


@dataclass
class Pod:
    created: float
    ready_at: float
    busy: int = 0
    leaving: bool = False
    gone_at: float = math.inf  # set once a removed pod has nothing left to finish
    unaware: bool = False  # removed while starting: serves anyway until killed at ``gone_at``
    tasks: dict[int, tuple[float, float, int]] = field(default_factory=dict)  # serial: arrival, service, wait


@dataclass
class Result:
    replica_seconds: float
    waits: list[float]
    scaling_actions: int
    unfinished: int


def simulate(
    trace: Trace,
    scaler: Scaler,
    *,
    concurrency: int,
    startup_seconds: float,
    drain_idle_first: bool,
    timeline: list[tuple[float, int, int, int]] | None = None,
) -> Result:
    arrivals = deque(sorted(trace))
    queue: deque[tuple[float, float]] = deque()
    pods: list[Pod] = []
    finishing: list[tuple[float, int, Pod]] = []  # (finish time, tie-breaker, pod) of tasks in flight
    serial = 0
    waits: list[float] = []
    dropped: set[int] = set()  # waits of tasks whose pod was killed under them (served again later)
    cancelled: set[int] = set()  # serials of those tasks, whose completion never comes
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
        while finishing and finishing[0][0] <= now:
            _, done, pod = heapq.heappop(finishing)
            if done in cancelled:
                cancelled.discard(done)
                continue
            del pod.tasks[done]
            pod.busy -= 1
            completed += 1
            in_flight -= 1
            if pod.leaving and not pod.unaware and pod.busy == 0:
                pod.gone_at = now + STOP_SECONDS
        for pod in pods:
            if pod.gone_at <= now + 1e-9 and pod.tasks:  # killed with work in hand
                for held, (arrived, service, wait) in sorted(pod.tasks.items(), key=lambda t: t[1][0], reverse=True):
                    queue.appendleft((arrived, service))
                    dropped.add(wait)
                    cancelled.add(held)
                in_flight -= len(pod.tasks)
                pod.tasks.clear()
                pod.busy = 0
        pods = [p for p in pods if p.gone_at > now + 1e-9]
        if queue:
            for pod in pods:
                if (pod.leaving and not pod.unaware) or pod.ready_at > now:
                    continue
                while queue and pod.busy < concurrency:
                    arrived, service = queue.popleft()
                    waits.append(now - arrived)
                    pod.busy += 1
                    in_flight += 1
                    serial += 1
                    pod.tasks[serial] = (arrived, service, len(waits) - 1)
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
            if timeline is not None:
                timeline.append((now, spec_replicas, sum(p.ready_at <= now for p in serving), len(pods)))
            if len(serving) < spec_replicas:
                pods += [Pod(created=now, ready_at=now + startup_seconds) for _ in range(spec_replicas - len(serving))]
            elif len(serving) > spec_replicas:
                if drain_idle_first:  # not ready first, then the lowest deletion cost (the idlest)
                    order = sorted(serving, key=lambda p: (p.ready_at <= now, p.busy, -p.created))
                else:  # ReplicaSet default: not-ready first, then the newest
                    order = sorted(serving, key=lambda p: (p.ready_at <= now, -p.created))
                for pod in order[: len(serving) - spec_replicas]:
                    pod.leaving = True
                    if pod.ready_at > now:
                        pod.gone_at, pod.unaware = now + UNSTARTED_STOP_SECONDS, True
                    elif pod.busy == 0:
                        pod.gone_at = now + STOP_SECONDS
        if not arrivals and not queue and in_flight == 0 and not pods and now > DURATION:
            break
        # The next tick where anything can happen: an arrival, a completion, a pod ready, a decision.
        upcoming = [next_decision]
        if arrivals:
            upcoming.append(arrivals[0][0])
        if finishing:
            upcoming.append(finishing[0][0])
        if queue:
            upcoming += [p.ready_at for p in pods if p.ready_at > now and (p.unaware or not p.leaving)]
        upcoming += [p.gone_at for p in pods if p.gone_at < math.inf]
        following = max(step + 1, math.ceil(min(upcoming) / STEP - 1e-6))
        following = min(following, last_step + 1)
        replica_seconds += len(pods) * STEP * (following - step)
        step = following
    if dropped:
        waits = [w for i, w in enumerate(waits) if i not in dropped]
    return Result(
        replica_seconds=replica_seconds, waits=waits, scaling_actions=actions, unfinished=len(queue) + len(arrivals)
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
