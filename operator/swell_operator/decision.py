"""The scaling decision: a pure function from what the operator observed to the replicas a pool needs.

No clock, no I/O, no randomness: the operator and the benchmark simulator call the same ``decide`` with
the same observations and get the same answer, and the tests can state every rule as a table.

The rule, in words. ``target_wait_seconds`` is a budget to spend, not a wait to avoid: the pool is sized
so the backlog drains within it, and so that, over the next reaction time (a pod's start, learned from
the pods the pool started), arrivals the pool cannot keep up with still leave every task inside it. A
pool therefore runs its last replica at up to 100 % and lets a fraction of a replica's work queue,
adding the replica only when the queue would outgrow the budget. New pods count for the part of the
budget left once they have started, and are asked for only where work would still wait once they are
ready (pods already starting may have drained it by then). Replicas go down only to a count that would
keep the budget over the stabilisation window too (a longer look ahead, so a pool does not flap), never
below what the work in flight needs, and to zero after ``idle_seconds_before_zero`` with nothing queued
or in flight, or sooner when the arrival rate seen while busy (the lower of its fast and slow averages)
makes the silence so far implausible (the work stopped).
Demand is computed from the queue afresh at every call rather than from the current replica count, so
pods that are still starting cannot cause a runaway (the backlog they will drain is the same backlog).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from swell_operator.rates import ARRIVAL_SMOOTHING_SECONDS

# Replicas are whole: 1.05 replicas' worth of work stays on 1 rather than doubling the pool. The 5 % the
# pool then lacks shows up as backlog, which this same rule drains at the next reading if it persists.
ROUNDING_TOLERANCE = 0.1
# Where the backlog cannot be seen (Pub/Sub without Cloud Monitoring), workers are sized to run this busy:
# a pool whose every slot is taken may have any amount of work waiting, so it grows by 1/0.7 per round of
# ready replicas until the headroom shows (Knative's KPA targets the same 70 %). The in-flight figure is
# the mean over the interval, so one busy instant does not scale a pool out.
UNSEEN_BACKLOG_UTILISATION = 0.7
# How long a new pod takes to serve, until the pool has timed one of its own: a Python worker image's
# start plus a small model load. Learned per pool after its first scale-up (``Memory.startup_seconds``).
STARTUP_GUESS_SECONDS = 10.0
# New pods serve for at least this share of the budget even where they take longer than it to start, and
# at least one service time: tasks that will have waited past the budget by the time a pod is ready drain
# as fast as a slot each allows, no faster (more pods than waiting tasks would finish none of them sooner).
# A share of the pod start instead held every budget below a pod start to the same 2.5 s drain of a wake.
LEAST_BUDGET_SHARE = 0.25
# Silence that the arrival rate seen while busy makes this unlikely (e^-10, 0.005 %) means the work stopped.
EXPECTED_ARRIVALS_IN_SILENCE = 10.0
# A budget of at least this many pod starts is met by scaling out when a backlog shows; a shorter one needs
# headroom before it (the quantile rule).
REACTIVE_BUDGET_STARTUPS = 1.0
# The target wait is a p95 objective: the quantile rule keeps this share of tasks within it.
WAIT_QUANTILE = 0.95
# Smoothing of the learned pod start time (share of a new sample).
STARTUP_LEARNING_WEIGHT = 0.5
# Until completions have measured the service time, a batch is sized as if tasks took this many times the
# hint: the measurement arrives only once the first pods have served (a pod start in), too late for a
# second wave of pods to start inside the budget, so an hint off by this much must already fit. The first
# completions then correct the size, down as readily as up.
UNMEASURED_HINT_FACTOR = 2.0
# A pool that wakes from zero expects, for this many pod starts, the arrival rate it saw when it was last
# busy: its own estimate starts at zero and lags the work by its smoothing (an on/off load comes back at
# the rate it left).
WAKE_MEMORY_STARTUPS = 2.0


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
    # The arrival rate averaged over minutes (rates.RateEstimator.slow_arrival_rate), for the steady-state
    # quantile rule: a formula for the long run read with a 10 s average adds a replica at every noisy
    # reading. None: ``arrival_rate`` serves for both.
    steady_arrival_rate: float | None = None
    # Arrivals per second over the interval since the last reading (rates.RateEstimator.last_arrivals):
    # tasks shorter than the poll interval come and go between two readings, which then find nothing
    # queued or in flight. None: not counted (busy is what the readings saw).
    recent_arrival_rate: float | None = None


@dataclass(frozen=True)
class Memory:
    """What a decision needs from earlier ones; the operator keeps it in the pool's status."""

    # The last time anything was queued or in flight (None: never seen busy since the pool was created).
    last_busy_at: float | None = None
    # The arrival rate at that moment: how much silence since then is plausible.
    busy_arrival_rate: float = 0.0
    # The slow (minutes) arrival average at that moment, where the operator has one: the fast one reads
    # high after a cluster of arrivals, and a pool that judged silence by it went to zero in the middle
    # of steady work (2 tasks/s read as 4 made a 2.5 s gap "implausible"), each wake costing a pod start.
    busy_steady_rate: float | None = None
    # Since when pods have been starting (spec above ready), and how long a pod took to start.
    starting_since: float | None = None
    starting_replicas: int = 0
    startup_seconds: float | None = None
    # When the decision first asked for the pods now starting (kept while more join them; None once all
    # are ready): how far into their start they are.
    asked_at: float | None = None
    # When a batch landed: the reading that found the queue, empty before, holding more than a budget's
    # worth of arrivals. None while the queue is empty or built up from arrivals (its age is then spread
    # over its tasks, and a p95 target is met by the fresh budget).
    batch_since: float | None = None
    backlog_seen: bool = False  # the last reading found a backlog
    # (time, replicas) the quantile rule called for within the stabilisation window, oldest first.
    headroom: tuple[tuple[float, int], ...] = ()
    # When the pool last woke from zero, and the arrival rate it had when it was last busy before.
    woke_at: float | None = None
    wake_arrival_rate: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "lastBusyAt": self.last_busy_at,
            "busyArrivalRate": self.busy_arrival_rate,
            "busySteadyRate": self.busy_steady_rate,
            "startingSince": self.starting_since,
            "startingReplicas": self.starting_replicas,
            "startupSeconds": self.startup_seconds,
            "askedAt": self.asked_at,
            "headroom": [list(h) for h in self.headroom],
            "batchSince": self.batch_since,
            "backlogSeen": self.backlog_seen,
            "wokeAt": self.woke_at,
            "wakeArrivalRate": self.wake_arrival_rate,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Memory:
        """Memory from status; anything unreadable starts afresh (the cost is one learned start time)."""
        if not isinstance(data, Mapping):
            return cls()
        try:
            last_busy_at = _optional(data.get("lastBusyAt"))
            rate = _optional(data.get("busyArrivalRate"))
            steady_rate = _optional(data.get("busySteadyRate"))
            starting_since = _optional(data.get("startingSince"))
            startup = _optional(data.get("startupSeconds"))
            asked_at = _optional(data.get("askedAt"))
            starting_replicas = int(data.get("startingReplicas") or 0)
            headroom = tuple((float(t), int(n)) for t, n in data.get("headroom") or ())
            batch_since = _optional(data.get("batchSince"))
            woke_at = _optional(data.get("wokeAt"))
            wake_rate = _optional(data.get("wakeArrivalRate"))
        except (TypeError, ValueError):
            return cls()
        return cls(
            last_busy_at=last_busy_at,
            busy_arrival_rate=max(rate or 0.0, 0.0),
            busy_steady_rate=None if steady_rate is None else max(steady_rate, 0.0),
            starting_since=starting_since,
            starting_replicas=max(starting_replicas, 0),
            asked_at=asked_at,
            headroom=headroom,
            batch_since=batch_since,
            backlog_seen=bool(data.get("backlogSeen")),
            woke_at=woke_at,
            wake_arrival_rate=max(wake_rate or 0.0, 0.0),
            startup_seconds=None if startup is None or startup < 0 else startup,
        )


def _optional(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


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


@dataclass(frozen=True)
class Need:
    """Replicas the queue needs: ``up`` now, ``keep`` to hold the budget over the stabilisation window."""

    up: int
    keep: int
    why: str
    headroom: int = 0  # the quantile rule's share of ``up``: held for the stabilisation window


def demand(
    observation: Observation,
    policy: Policy,
    startup_seconds: float = STARTUP_GUESS_SECONDS,
    backlog_age: float = 0.0,
    expected_arrivals: float = 0.0,
    starting_for: float = 0.0,
    just_woke: bool = False,
) -> Need:
    """Replicas the queue needs now and over the stabilisation window, before clamping, and why.

    ``backlog_age``: how long ago a batch landed (0 where the queue built up instead: see ``decide``). A
    backlog larger than a budget's worth of arrivals is then still that batch, whose tasks are that old,
    and it has only the rest of the budget; a smaller one is mostly recent arrivals (a queue that keeps up
    holds the latest), and the full budget applies. Without this, every reading restarted the budget for
    the same waiting tasks, and a batch sized on a service-time hint half the real one missed its budget by
    the first sizing's error.

    ``expected_arrivals``: the rate the pool expects whatever it has measured so far (a wake, see
    ``decide``). ``starting_for``: how long the pods now starting have been starting. ``just_woke``: the
    pool woke from zero less than the slow arrival average's time constant ago, so that average, which
    started from the silence, still lags the work: the quantile rule reads the fast one.
    """
    backlog, in_flight = max(observation.backlog, 0), max(observation.in_flight, 0)
    for_in_flight, in_flight_why = _for_in_flight(
        in_flight, observation.backlog_visible, policy, observation.current_replicas
    )
    # Where the backlog is unseen (Pub/Sub), the arrival rate is only what the workers already took, so
    # planning on it double-counts the in-flight rule, which keeps them 70 % busy and grows them when full.
    arrivals = max(observation.arrival_rate or 0.0, 0.0) if observation.backlog_visible else 0.0
    if backlog == 0 and in_flight == 0 and arrivals == 0:
        return Need(0, 0, "nothing queued or in flight")
    if backlog > 0 and observation.current_replicas == 0 and in_flight == 0 and backlog < policy.activation_backlog:
        return Need(0, 0, f"backlog {backlog} is below the activation threshold {policy.activation_backlog}")
    if observation.backlog_visible:
        arrivals = max(arrivals, expected_arrivals)
    budget = policy.target_wait_seconds
    capacity = replica_capacity(observation, policy)
    measured = observation.service_rate_per_replica is not None and observation.service_rate_per_replica > 0
    if not measured and backlog > arrivals * budget:
        capacity /= UNMEASURED_HINT_FACTOR
    ready = min(max(observation.ready_replicas, 0), max(observation.current_replicas, 0))
    # Drain: ready replicas serve for the whole budget, new ones for what is left after they start. A
    # backlog the ready replicas clear before a new pod could start needs no new pod, however short the
    # budget: queueing noise is the quantile rule's business, not the drain's.
    left = budget
    if backlog_age > 0 and backlog > arrivals * budget:
        left = max(budget - backlog_age, LEAST_BUDGET_SHARE * budget)
    horizon = max(left, startup_seconds)
    least = max(LEAST_BUDGET_SHARE * left, policy.concurrency / capacity)  # a service time at the least
    late_budget = max(left - startup_seconds, least)
    # Pods still starting were asked for when the backlog showed (as far as the decision knows): they have
    # its age less to start, and serve what is left of the budget once ready.
    starting = max(observation.current_replicas, 0) - ready
    starting_in = max(startup_seconds - backlog_age, 0.0)
    starting_budget = max(left - starting_in, least)
    work = backlog / capacity
    beyond_ready = work - ready * max(left, least)
    if work <= ready * horizon:
        for_drain = work / horizon
    elif beyond_ready <= starting * starting_budget:
        for_drain = ready + beyond_ready / starting_budget
    else:
        for_drain = ready + starting + (beyond_ready - starting * starting_budget) / late_budget
    # A pod asked for now serves only what still waits once it is ready: where the pods already asked for
    # will have drained the backlog and kept up with arrivals by then, the drain asks for no more of them.
    waiting_when_ready = (
        backlog
        + arrivals * startup_seconds
        - ready * capacity * startup_seconds
        - starting * capacity * min(starting_for, startup_seconds)
    )
    if waiting_when_ready <= 0:
        for_drain = min(for_drain, ready + starting)
    for_quantile, for_catch_up = 0, 0.0
    if budget < REACTIVE_BUDGET_STARTUPS * startup_seconds:  # too short a budget to scale out into
        steady = arrivals
        if observation.steady_arrival_rate is not None and observation.backlog_visible and not just_woke:
            steady = max(observation.steady_arrival_rate, 0.0)
        for_quantile = _for_quantile(
            steady, capacity / policy.concurrency, policy.concurrency, budget, policy.max_replicas
        )
    if budget < REACTIVE_BUDGET_STARTUPS * startup_seconds and just_woke:
        # Waking to a short budget: what queues until a pod asked for now is ready waits longer than the
        # budget whatever is done; the pool then drains it as fast as the rest of the budget rules allow
        # (``late_budget``) rather than keep up with arrivals and leave it queued. Pods already starting
        # serve from their start on. (In a steady state the quantile rule keeps the headroom instead: read
        # on a noisy 10 s rate, this one would add a replica at every reading above one replica's rate.)
        for_catch_up = arrivals / capacity + max(waiting_when_ready, 0.0) / (capacity * late_budget)
    # Keep up: over a horizon, arrivals beyond capacity queue; the queue then must still drain in budget.
    for_arrivals = _for_horizon(backlog, arrivals, capacity, budget, startup_seconds)
    for_window = _for_horizon(
        backlog, arrivals, capacity, budget, max(policy.scale_down_stabilization_seconds, startup_seconds)
    )
    up = max(
        _whole(for_drain),
        _whole(for_arrivals),
        _whole(for_catch_up),
        for_quantile,
        for_in_flight,
        1 if backlog > 0 else 0,
    )
    keep = max(up, _whole(for_window))
    source = "measured" if measured else f"{UNMEASURED_HINT_FACTOR:g}x the hint"
    why = "nothing queued or in flight; " if backlog == 0 and in_flight == 0 else ""
    aged = f" ({backlog_age:.0f}s old, {left:.0f}s of the budget left)" if left < budget else ""
    why += (
        f"backlog {backlog}{aged} and {arrivals:.2f} arrivals/s at {capacity:.2f} tasks/s/replica ({source}) "
        f"need {up} to stay within {budget:g}s (pods start in {startup_seconds:.0f}s)"
    )
    if keep > up:
        why += f", {keep} to stay within it for {policy.scale_down_stabilization_seconds:g}s"
    if for_in_flight >= up and in_flight_why:
        why += f"; {in_flight_why}"
    return Need(up, keep, why, for_quantile)


def _for_horizon(backlog: int, arrivals: float, capacity: float, budget: float, horizon: float) -> float:
    """Replicas n for which the backlog in ``horizon`` seconds still drains within the budget:
    backlog + (arrivals - n * capacity) * horizon <= n * capacity * budget."""
    return (backlog + arrivals * horizon) / (capacity * (budget + horizon))


def _for_quantile(arrivals: float, slot_rate: float, concurrency: int, budget: float, most: int) -> int:
    """Replicas that keep the steady-state p95 wait within the budget (M/M/c, Erlang C), where that takes
    headroom beyond merely keeping up; 0 where keeping up is enough, so the fluid rules may run the last
    replica short and queue its shortfall within the budget."""
    if arrivals <= 0 or slot_rate <= 0:
        return 0
    load = arrivals / slot_rate  # slots' worth of work
    keeping_up = math.floor(load / concurrency) + 1
    replicas = keeping_up
    while replicas < most:
        servers = replicas * concurrency
        tail = _erlang_c(servers, load) * math.exp(-(servers * slot_rate - arrivals) * budget)
        if tail <= 1.0 - WAIT_QUANTILE:
            break
        replicas += 1
    return replicas if replicas > keeping_up else 0


def _erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival waits in an M/M/``servers`` queue offered ``load`` Erlangs."""
    if load >= servers:
        return 1.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = load * blocking / (k + load * blocking)
    return servers * blocking / (servers - load * (1.0 - blocking))


def _whole(replicas: float) -> int:
    return max(math.ceil(replicas - ROUNDING_TOLERANCE), 0)


def _for_in_flight(in_flight: float, backlog_visible: bool, policy: Policy, current: int) -> tuple[int, str]:
    """Replicas the work in flight needs: full workers where the backlog shows, else with headroom.

    Where the backlog shows, work in flight keeps replicas but never adds one: tasks beyond the slots of
    the current replicas are held by pods on their way out (draining after a scale-down, or cut while
    starting and serving until their grace period ends), or are pending entries of a consumer that died.
    New pods would not serve them; counting them made a pool flap between 1 and 2 on kind, each flap
    leaving a pod that lived out its 30 s grace period (bench/results/keda_side_by_side.json)."""
    if in_flight <= 0:
        return 0, ""
    if backlog_visible:
        needed = min(math.ceil(in_flight / policy.concurrency), max(current, 1))
        return needed, f"{in_flight:g} in flight needs {needed} at concurrency {policy.concurrency}"
    slots = policy.concurrency * UNSEEN_BACKLOG_UTILISATION
    needed = max(math.ceil(in_flight / slots - ROUNDING_TOLERANCE), 1)
    return needed, (
        f"{in_flight:.1f} in flight on average needs {needed} to keep workers "
        f"{UNSEEN_BACKLOG_UTILISATION:.0%} busy (the backlog is not visible)"
    )


def _learn_startup(observation: Observation, memory: Memory) -> Memory:
    """Time pods take from being asked for to being ready, from this pool's own pods. A start that more
    replicas join restarts the clock; one cut short by a scale-down teaches nothing."""
    current, ready = observation.current_replicas, observation.ready_replicas
    if ready < current:
        if memory.starting_since is None or current > memory.starting_replicas:
            return replace(memory, starting_since=observation.now, starting_replicas=current)
        if current < memory.starting_replicas:
            return replace(memory, starting_replicas=current)
        return memory
    if memory.starting_since is None:
        return memory
    if current < memory.starting_replicas:
        return replace(memory, starting_since=None, starting_replicas=0)
    sample = observation.now - memory.starting_since
    learned = (
        sample
        if memory.startup_seconds is None
        else (memory.startup_seconds + STARTUP_LEARNING_WEIGHT * (sample - memory.startup_seconds))
    )
    return replace(memory, starting_since=None, starting_replicas=0, startup_seconds=learned)


def _silence_rate(memory: Memory) -> float:
    """The arrival rate a silence is judged by: the lower of the fast and slow averages seen while busy.

    A silence is read as "the work stopped" once it is implausible at this rate; a rate read high makes
    ordinary Poisson gaps look implausible, and each false stop costs a wake (a pod start of queueing).
    Work that really stops still stops the pool: after minutes at a rate, the slow average has it too."""
    if memory.busy_steady_rate is None:
        return memory.busy_arrival_rate
    return min(memory.busy_arrival_rate, memory.busy_steady_rate)


def decide(observation: Observation, policy: Policy, memory: Memory) -> Decision:
    now, current = observation.now, observation.current_replicas
    memory = _learn_startup(observation, memory)
    startup = STARTUP_GUESS_SECONDS if memory.startup_seconds is None else memory.startup_seconds
    busy = observation.backlog > 0 or observation.in_flight > 0
    # Work that came and went since the last reading restarts the idle clock: judged on what the readings
    # saw, a pool of short tasks went to zero in the middle of its work, and at a budget shorter than a
    # pod start each such wake sent a pod start's worth of tasks over it. It does nothing more: a pool at
    # zero wakes for work it can see, and one told to leave as soon as it is idle still does.
    came_and_went = current > 0 and (observation.recent_arrival_rate or 0.0) > 0
    if observation.backlog <= 0:
        if memory.backlog_seen:
            memory = replace(memory, batch_since=None, backlog_seen=False)
    elif not memory.backlog_seen:
        arrivals = max(observation.arrival_rate or 0.0, 0.0)
        landed = observation.backlog > arrivals * policy.target_wait_seconds
        memory = replace(memory, backlog_seen=True, batch_since=now if landed else None)
    backlog_age = 0.0 if memory.batch_since is None else now - memory.batch_since
    wake_window = WAKE_MEMORY_STARTUPS * startup
    quiet_for = math.inf if memory.last_busy_at is None else now - memory.last_busy_at
    woke = current == 0 or quiet_for >= startup  # from zero, or from a silence longer than a pod start
    if busy and woke and (memory.woke_at is None or now - memory.woke_at >= wake_window):
        memory = replace(memory, woke_at=now, wake_arrival_rate=memory.busy_arrival_rate)
    waking = memory.woke_at is not None and now - memory.woke_at < wake_window
    if observation.ready_replicas >= current and memory.asked_at is not None:
        memory = replace(memory, asked_at=None)
    starting_for = 0.0 if memory.asked_at is None else now - memory.asked_at
    need = demand(
        observation,
        policy,
        startup,
        backlog_age,
        expected_arrivals=memory.wake_arrival_rate if waking else 0.0,
        starting_for=starting_for,
        just_woke=memory.woke_at is not None and now - memory.woke_at < ARRIVAL_SMOOTHING_SECONDS,
    )
    up, keep, why = need.up, need.keep, need.why
    # Headroom follows a noisy arrival rate: hold its highest recent call for the stabilisation window.
    window_start = now - policy.scale_down_stabilization_seconds
    headroom = tuple(h for h in memory.headroom if h[0] > window_start)
    if need.headroom:
        headroom = (*headroom, (now, need.headroom))
    if busy or came_and_went:
        arrivals = max(observation.arrival_rate or 0.0, 0.0)
        steady = observation.steady_arrival_rate
        memory = replace(
            memory,
            last_busy_at=now,
            busy_arrival_rate=arrivals,
            busy_steady_rate=None if steady is None else max(steady, 0.0),
            headroom=headroom,
        )
    elif headroom != memory.headroom:
        memory = replace(memory, headroom=headroom)
    held = max((n for _, n in headroom), default=0)
    if held > keep:
        keep = held
        why += f"; {held} for headroom called for in the last {policy.scale_down_stabilization_seconds:g}s"

    if not busy and current == 0:
        up = keep = 0  # a pool asleep wakes for work, not for a rate
    elif not busy:
        idle_for = math.inf if memory.last_busy_at is None else now - memory.last_busy_at
        silence_rate = _silence_rate(memory)
        expected = silence_rate * idle_for
        if idle_for >= policy.idle_seconds_before_zero:
            up = keep = 0
            why += f"; idle for {policy.idle_seconds_before_zero:g}s or more"
        elif expected >= EXPECTED_ARRIVALS_IN_SILENCE:
            up = keep = 0
            why += (
                f"; idle for {idle_for:.0f}s where {silence_rate:.2f} arrivals/s "
                f"would have sent {expected:.0f}: the work stopped"
            )
        else:
            keep = max(keep, 1)
            why += f"; idle for {idle_for:.0f}s of {policy.idle_seconds_before_zero:g}s before zero"

    wanted = up
    up = min(max(up, policy.min_replicas), policy.max_replicas)
    keep = min(max(keep, policy.min_replicas), policy.max_replicas)
    if up != wanted:
        why += f"; clamped to {'min' if up > wanted else 'max'} {up}"

    if up > current:
        replicas = up
        if policy.max_step_up is not None and current + policy.max_step_up < up:
            replicas = current + policy.max_step_up
            why += f"; step up limited to +{policy.max_step_up}"
    elif keep < current and observation.ready_replicas < current:
        # The ReplicaSet removes pods that are not ready first, and a pod cut while starting lives out its
        # grace period anyway (its worker has no SIGTERM handler yet): let the starting pods get ready.
        replicas = current
        why += f"; holding {current} until the {current - observation.ready_replicas} starting are ready"
    elif keep < current and observation.backlog > 0:
        # Each reading restarts the budget for the same waiting tasks; only an empty queue shows it was met.
        replicas = current
        why += f"; holding {current} until the backlog is drained"
    elif keep < current:
        replicas = keep
        if policy.max_step_down is not None and current - replicas > policy.max_step_down:
            replicas = current - policy.max_step_down
            why += f"; step down limited to -{policy.max_step_down}"
    else:
        replicas = current
        if current > up:
            why += f"; holding {current}, needed within the next {policy.scale_down_stabilization_seconds:g}s"

    if replicas > current and memory.asked_at is None:
        memory = replace(memory, asked_at=now)
    return Decision(replicas=replicas, reason=f"{why} -> {replicas} (from {current})", memory=memory, current=current)
