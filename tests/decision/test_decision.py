"""The scaling decision, rule by rule, with no cluster and no clock: it is a pure function."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from typing import Any

import pytest
from swell_operator.decision import (
    EXPECTED_ARRIVALS_IN_SILENCE,
    STARTUP_GUESS_SECONDS,
    Decision,
    Memory,
    Observation,
    Policy,
    decide,
)

POLICY = Policy(
    min_replicas=0,
    max_replicas=10,
    concurrency=4,
    target_wait_seconds=30.0,
    activation_backlog=1,
    idle_seconds_before_zero=30.0,
    scale_down_stabilization_seconds=60.0,
    max_step_up=None,
    max_step_down=None,
    task_seconds_hint=1.0,
)


def seen(
    backlog: int = 0,
    in_flight: float = 0,
    current: int = 0,
    now: float = 1000.0,
    arrival_rate: float | None = None,
    service_rate: float | None = None,
    ready: int | None = None,
) -> Observation:
    return Observation(
        now=now,
        backlog=backlog,
        in_flight=in_flight,
        per_consumer_in_flight={},
        arrival_rate=arrival_rate,
        service_rate_per_replica=service_rate,
        current_replicas=current,
        ready_replicas=current if ready is None else ready,
    )


def test_zero_stays_zero_when_nothing_is_queued() -> None:
    decision = decide(seen(), POLICY, Memory())
    assert decision.replicas == 0 and not decision.changed
    assert "nothing queued or in flight" in decision.reason
    # a rate left over from earlier work does not wake a sleeping pool either
    assert decide(seen(arrival_rate=5.0), replace(POLICY, target_wait_seconds=0.5), Memory()).replicas == 0


def test_first_task_activates_a_pool_at_zero() -> None:
    decision = decide(seen(backlog=1), POLICY, Memory())
    assert decision.replicas == 1 and decision.changed


def test_below_activation_threshold_a_pool_at_zero_waits() -> None:
    policy = replace(POLICY, activation_backlog=5)
    assert decide(seen(backlog=4), policy, Memory()).replicas == 0
    assert "activation threshold 5" in decide(seen(backlog=4), policy, Memory()).reason
    assert decide(seen(backlog=5), policy, Memory()).replicas == 1
    # once running, the threshold no longer applies
    assert decide(seen(backlog=4, current=1), policy, Memory()).replicas == 1


@pytest.mark.parametrize(
    ("backlog", "current", "arrivals", "service", "expected"),
    [
        # running pods (all ready) serve the backlog for the whole 30 s budget at 4 tasks/s each (measured)
        (120, 1, None, 4.0, 1),  # 30 s of work: one replica is exactly enough
        (122, 1, None, 4.0, 1),  # 30.5 s: within the rounding tolerance of one replica
        (200, 1, None, 4.0, 2),  # 50 s: the ready one does 30 s, the other 20 s goes to a new pod
        (480, 4, None, 4.0, 4),  # 120 s of work, 4 ready x 30 s
        (500, 4, None, 4.0, 5),  # 125 s: 5 s more than 4 ready can do, one new pod
        (480, 4, None, 2.0, 10),  # measured 2 tasks/s/replica: 240 s of work, 120 s more -> 6 new pods
        (5000, 4, None, 4.0, 10),  # capped at max
        # at zero every pod is new and serves only after its start: 30 s - 10 s
        (80, 0, None, 4.0, 1),  # 20 s of work
        (120, 0, None, 4.0, 2),  # 30 s of work: one new pod would take 10 + 30 s
        (500, 0, None, 4.0, 7),  # 125 s over 20 s each
        # unmeasured: sized as if tasks took twice the 1 s hint (2 tasks/s/replica)
        (80, 0, None, None, 2),  # 40 s of work over 20 s
        (120, 1, None, None, 3),  # 60 s: the ready one does 30 s, 30 s more over 20 s each
    ],
)
def test_replicas_drain_the_backlog_within_the_target_wait(
    backlog: int, current: int, arrivals: float | None, service: float | None, expected: int
) -> None:
    observation = seen(
        backlog=backlog, current=current, arrival_rate=arrivals, service_rate=service, in_flight=4 * current
    )
    decision = decide(observation, POLICY, Memory())
    assert decision.replicas == expected, decision.reason


def test_reason_names_the_numbers_it_used() -> None:
    reason = decide(seen(backlog=5000), POLICY, Memory()).reason
    assert "backlog 5000" in reason and "2.00 tasks/s/replica (2x the hint)" in reason
    assert f"pods start in {STARTUP_GUESS_SECONDS:.0f}s" in reason
    assert "clamped to max 10" in reason and reason.endswith("-> 10 (from 0)")


def test_the_operator_test_floor_holds_for_500_tasks_at_zero() -> None:
    """tests/operator/test_scaling.py pushes 500 tasks and expects between ceil(500/120) = 5 and 10."""
    assert 5 <= decide(seen(backlog=500, arrival_rate=8.0), POLICY, Memory()).replicas <= 10


def test_never_below_what_in_flight_work_needs() -> None:
    decision = decide(seen(in_flight=14, current=6, backlog=0), POLICY, Memory())
    assert decision.replicas == 4
    decision = decide(seen(in_flight=14, current=2), POLICY, Memory())
    assert decision.replicas == 2


@pytest.mark.parametrize(
    ("in_flight", "current", "ready", "expected"),
    [
        (14, 2, 2, 2),  # 6 tasks on pods draining away: no new pod would serve them
        (7, 1, 1, 1),  # pending entries beyond one pod's 4 slots (a pod cut while starting took them)
        (3, 0, 0, 1),  # entries pending at zero (a consumer died): one worker to reclaim them
        (8, 3, 3, 2),  # within the current replicas the rule still holds
    ],
)
def test_work_in_flight_keeps_replicas_but_never_adds_one(
    in_flight: int, current: int, ready: int, expected: int
) -> None:
    decision = decide(seen(in_flight=in_flight, current=current, ready=ready), POLICY, Memory(last_busy_at=999.0))
    assert decision.replicas == expected, decision.reason


def test_pods_still_starting_are_not_cut() -> None:
    """A scale-down while pods start would cut the starting ones (the ReplicaSet removes pods that are not
    ready first), which live out their grace period anyway: the pool holds until they are ready."""
    starting = decide(seen(current=2, ready=1, in_flight=2, arrival_rate=1.0, service_rate=4.0), POLICY, Memory())
    assert starting.replicas == 2 and "starting are ready" in starting.reason
    started = decide(seen(current=2, ready=2, in_flight=2, arrival_rate=1.0, service_rate=4.0), POLICY, Memory())
    assert started.replicas == 1


def test_the_quantile_rule_reads_the_steady_rate_where_given() -> None:
    """A 10 s average that reads 3.9 tasks/s on a 3 tasks/s load asks a short budget for a second pod; the
    minutes-long average it is a steady-state formula for does not."""
    short = replace(POLICY, target_wait_seconds=3.0)
    busy = Memory(last_busy_at=999.0)  # busy for a while: not a wake
    fast = seen(current=1, in_flight=3, arrival_rate=3.9, service_rate=4.0)
    assert decide(fast, short, busy).replicas == 2
    assert decide(replace(fast, steady_arrival_rate=3.0), short, busy).replicas == 1
    # where the backlog is unseen the rate is not planned on at all; the steady one is not either
    unseen = replace(fast, steady_arrival_rate=3.0, backlog_visible=False)
    assert (
        decide(unseen, short, busy).replicas == decide(replace(unseen, steady_arrival_rate=None), short, busy).replicas
    )


def test_scale_up_is_immediate_and_can_be_stepped() -> None:
    # 125 s of work: the ready replica does 30 s, the other 95 s goes to new pods serving 20 s each
    measured = seen(backlog=500, current=1, in_flight=4, service_rate=4.0)
    assert decide(measured, POLICY, Memory()).replicas == 6
    stepped = decide(measured, replace(POLICY, max_step_up=2), Memory())
    assert stepped.replicas == 3 and "step up limited to +2" in stepped.reason


# -- spending the budget: the last replica runs short, its shortfall queues within the budget -------------


def test_the_last_replica_runs_short_while_the_queue_stays_inside_the_budget() -> None:
    """5 tasks/s against 4/s per replica: one replica, the other 1/s queueing, until the queue reaches
    what one replica still serves within the budget after the next pod start, (B + 5 x 10) / (4 x 40)."""
    running: dict[str, Any] = {"current": 1, "in_flight": 4, "service_rate": 4.0}
    assert decide(seen(backlog=0, arrival_rate=5.0, **running), POLICY, Memory()).replicas == 1
    assert decide(seen(backlog=100, arrival_rate=5.0, **running), POLICY, Memory()).replicas == 1
    assert decide(seen(backlog=130, arrival_rate=5.0, **running), POLICY, Memory()).replicas == 2
    # the same 100 waiting, with 8 tasks/s coming: in 10 s the queue would be beyond the budget
    assert decide(seen(backlog=100, arrival_rate=8.0, **running), POLICY, Memory()).replicas == 2


def test_a_short_budget_buys_headroom_before_the_queue_forms() -> None:
    """With a 0.5 s budget and pods that take 10 s to start, reacting to a queue is too late: at 3 tasks/s
    on 4 slots a replica's p95 wait is about 2.3 s (Erlang C), so a second one is kept warm."""
    short = replace(POLICY, target_wait_seconds=0.5)
    decision = decide(seen(current=1, in_flight=3, arrival_rate=3.0, service_rate=4.0), short, Memory())
    assert decision.replicas == 2, decision.reason
    # with the default 30 s budget the same load needs one
    assert decide(seen(current=1, in_flight=3, arrival_rate=3.0, service_rate=4.0), POLICY, Memory()).replicas == 1


def test_headroom_is_held_for_the_stabilisation_window() -> None:
    short = replace(POLICY, target_wait_seconds=0.5)
    first = decide(seen(current=1, in_flight=3, arrival_rate=3.0, service_rate=4.0, now=0), short, Memory())
    assert first.replicas == 2
    quieter = seen(current=2, in_flight=1, arrival_rate=1.0, service_rate=4.0)
    held = decide(replace(quieter, now=5), short, first.memory)
    assert held.replicas == 2 and "headroom called for" in held.reason
    assert decide(replace(quieter, now=61), short, held.memory).replicas == 1


# -- scale-down ---------------------------------------------------------------------------------------------


def test_scale_down_goes_to_what_holds_the_budget_over_the_window() -> None:
    # 3 tasks/s for the next 60 s at 4/s per replica: one replica keeps up, two are not needed
    decision = decide(seen(current=5, in_flight=3, arrival_rate=3.0, service_rate=4.0), POLICY, Memory())
    assert decision.replicas == 1, decision.reason
    # 7 tasks/s: one replica would queue 3/s, 180 tasks in the window, more than it serves in 30 s
    decision = decide(seen(current=5, in_flight=4, arrival_rate=7.0, service_rate=4.0), POLICY, Memory())
    assert decision.replicas == 2, decision.reason


def test_no_scale_down_while_a_backlog_waits() -> None:
    """Every reading restarts the budget for the same waiting tasks: only an empty queue shows it was met."""
    decision = decide(seen(backlog=100, current=5, in_flight=0), POLICY, Memory())
    assert decision.replicas == 5 and "until the backlog is drained" in decision.reason
    assert decide(seen(backlog=0, current=5, in_flight=4), POLICY, Memory()).replicas == 1


def test_scale_down_step_limit() -> None:
    decision = decide(seen(current=8, in_flight=4), replace(POLICY, max_step_down=2), Memory())
    assert decision.replicas == 6 and "step down limited to -2" in decision.reason


# -- to zero ------------------------------------------------------------------------------------------------


def test_to_zero_only_after_the_idle_time_with_nothing_left() -> None:
    memory = decide(seen(in_flight=1, current=1, now=0), POLICY, Memory()).memory
    assert decide(seen(current=1, now=29), POLICY, memory).replicas == 1
    assert "idle for 29s of 30s" in decide(seen(current=1, now=29), POLICY, memory).reason
    assert decide(seen(current=1, now=30), POLICY, memory).replicas == 0
    # anything in flight resets the idle clock
    busy = decide(seen(in_flight=1, current=1, now=25), POLICY, memory).memory
    assert decide(seen(current=1, now=40), POLICY, busy).replicas == 1


def test_to_zero_sooner_when_the_silence_says_the_work_stopped() -> None:
    """8 tasks/s until now: 2 s without a task would have brought 16, so the work has stopped."""
    memory = decide(seen(in_flight=4, current=2, now=0, arrival_rate=8.0), POLICY, Memory()).memory
    silent_for = EXPECTED_ARRIVALS_IN_SILENCE / 8.0
    assert decide(seen(current=2, now=silent_for - 0.5, arrival_rate=6.0), POLICY, memory).replicas >= 1
    stopped = decide(seen(current=2, now=silent_for, arrival_rate=6.0), POLICY, memory)
    assert stopped.replicas == 0 and "the work stopped" in stopped.reason
    # a trickle of 0.1 task/s makes no silence within the idle time implausible: the idle time rules
    trickle = decide(seen(in_flight=1, current=1, now=0, arrival_rate=0.1), POLICY, Memory()).memory
    assert decide(seen(current=1, now=29, arrival_rate=0.1), POLICY, trickle).replicas == 1


def test_silence_is_judged_by_the_slower_of_the_fast_and_slow_arrival_averages() -> None:
    """Steady work at 2 tasks/s whose 10 s average reads 4 after a cluster: a 2.5 s gap (e^-5 at the real
    rate, dozens of them in half an hour) is not the work stopping; 5 s of silence at 2 tasks/s is."""
    busy = replace(seen(in_flight=1, current=1, now=0, arrival_rate=4.0), steady_arrival_rate=2.0)
    memory = decide(busy, POLICY, Memory()).memory
    assert memory.busy_steady_rate == 2.0
    assert decide(seen(current=1, now=2.5, arrival_rate=3.0), POLICY, memory).replicas == 1
    stopped = decide(seen(current=1, now=5.0, arrival_rate=2.0), POLICY, memory)
    assert stopped.replicas == 0 and "2.00 arrivals/s" in stopped.reason, stopped.reason
    # work that ran for minutes and stopped: both averages have its rate, the pool goes as soon as before
    long_run = replace(seen(in_flight=4, current=2, now=0, arrival_rate=8.0), steady_arrival_rate=8.0)
    memory = decide(long_run, POLICY, Memory()).memory
    assert decide(seen(current=2, now=EXPECTED_ARRIVALS_IN_SILENCE / 8.0), POLICY, memory).replicas == 0


def test_work_that_came_and_went_between_readings_keeps_the_pool_busy() -> None:
    """2 tasks/s of 0.1 s tasks, read every second: most readings find nothing queued or in flight. Work
    counted since the last reading is work all the same; without it a steady pool at a short idle time
    went to zero mid-stream, and every wake cost a pod start of waits far over a sub-second budget."""
    policy = replace(POLICY, idle_seconds_before_zero=5.0)
    memory = decide(seen(in_flight=1, current=1, now=0, arrival_rate=2.0), policy, Memory()).memory
    quiet = replace(seen(current=1, now=6.0, arrival_rate=2.0), recent_arrival_rate=2.0)
    kept = decide(quiet, policy, memory)
    assert kept.replicas == 1 and kept.memory.last_busy_at == 6.0, kept.reason
    # the same reading without the count: idle for 6 s of 5, the pool goes
    assert decide(replace(quiet, recent_arrival_rate=None), policy, memory).replicas == 0
    # and nothing came: the pool goes too
    assert decide(replace(quiet, recent_arrival_rate=0.0), policy, memory).replicas == 0
    # it restarts the idle clock and nothing more: a pool told to leave as soon as its work is done does
    at_once = replace(policy, idle_seconds_before_zero=0.0)
    assert decide(quiet, at_once, memory).replicas == 0
    # a rate counted at zero replicas does not wake a sleeping pool: it wakes for work it can see
    asleep = replace(seen(current=0, now=6.0, arrival_rate=2.0), recent_arrival_rate=2.0)
    assert decide(asleep, policy, memory).replicas == 0


def test_min_and_max_clamp() -> None:
    policy = replace(POLICY, min_replicas=2, max_replicas=3)
    assert decide(seen(current=0), policy, Memory()).replicas == 2
    assert decide(seen(backlog=10_000, current=2), policy, Memory()).replicas == 3


# -- learning ------------------------------------------------------------------------------------------------


def test_pod_start_time_is_learned_from_the_pools_own_pods() -> None:
    memory = decide(seen(backlog=100, current=3, ready=0, now=0), POLICY, Memory()).memory
    memory = decide(seen(backlog=100, current=3, ready=1, now=20), POLICY, memory).memory
    assert memory.startup_seconds is None
    learned = decide(seen(backlog=100, current=3, ready=3, now=40), POLICY, memory)
    assert learned.memory.startup_seconds == 40.0 and "pods start in 40s" in learned.reason
    # slow pods leave less of the budget: 1 ready, 120 tasks more than it drains in 30 s, new pods serve
    # for max(30 - 40, 0.25 x 30) = 7.5 s (a quarter of the budget, however long they take to start)
    fresh_batch = replace(learned.memory, batch_since=None)  # a new batch, not the one of t=0 (50 s old)
    slow = decide(seen(backlog=240, current=1, in_flight=4, now=50, service_rate=4.0), POLICY, fresh_batch)
    assert slow.replicas == 1 + math.ceil(30 / 7.5 - 0.1), slow.reason


def test_a_start_cut_short_by_a_scale_down_teaches_nothing() -> None:
    memory = decide(seen(backlog=10, current=3, ready=1, now=0), POLICY, Memory()).memory
    memory = decide(seen(backlog=10, current=1, ready=1, now=2), POLICY, memory).memory
    assert memory.startup_seconds is None and memory.starting_since is None


# -- memory -------------------------------------------------------------------------------------------------


def test_memory_survives_json_and_garbage_starts_afresh() -> None:
    short = replace(POLICY, target_wait_seconds=0.5)
    reading = seen(backlog=5, current=1, ready=0, in_flight=3, now=7.5, arrival_rate=3.0)
    reading = replace(reading, steady_arrival_rate=2.5)
    decision = decide(reading, short, Memory(startup_seconds=12.0))
    assert decision.memory.headroom and decision.memory.starting_since == 7.5
    assert decision.memory.busy_steady_rate == 2.5
    text = json.dumps(decision.memory.to_json())
    assert Memory.from_json(json.loads(text)) == decision.memory
    for garbage in (None, {}, {"lastBusyAt": "soon"}, {"headroom": [["x", 1]]}, [1, 2], {"lastBusyAt": "nan"}):
        assert Memory.from_json(garbage) == Memory()  # type: ignore[arg-type]
    # status written by the previous operator version (a recommendations list) still reads
    assert Memory.from_json({"lastBusyAt": 3.0, "recommendations": [[1.0, 2]]}) == Memory(last_busy_at=3.0)


def test_memory_stays_bounded_by_the_window() -> None:
    memory = Memory()
    short = replace(POLICY, target_wait_seconds=0.5)
    for t in range(1000):
        memory = decide(seen(backlog=t % 50, current=2, now=float(t), arrival_rate=3.0 + t % 7), short, memory).memory
    assert len(memory.headroom) <= 61


# -- properties ---------------------------------------------------------------------------------------------


def test_more_backlog_never_means_fewer_replicas() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        current = rng.randint(0, 10)
        in_flight = rng.randint(0, 40)
        service = rng.choice([None, rng.uniform(0.1, 20)])
        arrivals = rng.choice([None, rng.uniform(0, 50)])
        policy = replace(POLICY, target_wait_seconds=rng.choice([0.5, 5.0, 30.0]))
        backlog = rng.randint(0, 3000)
        more = backlog + rng.randint(1, 3000)
        ready = rng.randint(0, current)
        a = decide(
            seen(backlog, in_flight, current, arrival_rate=arrivals, service_rate=service, ready=ready),
            policy,
            Memory(),
        )
        b = decide(
            seen(more, in_flight, current, arrival_rate=arrivals, service_rate=service, ready=ready), policy, Memory()
        )
        assert b.replicas >= a.replicas
        assert POLICY.min_replicas <= a.replicas <= POLICY.max_replicas
        held = min(math.ceil(in_flight / POLICY.concurrency), max(current, 1))
        assert a.replicas >= held or a.replicas == POLICY.max_replicas


def test_steady_load_does_not_flap() -> None:
    rng = random.Random(3)
    memory, replicas, changes = Memory(), 0, 0
    for t in range(600):
        backlog = max(0, int(rng.gauss(200, 20)))
        decision: Decision = decide(
            seen(
                backlog=backlog,
                in_flight=4 * replicas,
                current=replicas,
                now=float(t),
                arrival_rate=8.0,
                service_rate=4.0,
            ),
            POLICY,
            memory,
        )
        memory = decision.memory
        changes += decision.changed
        replicas = decision.replicas
    assert changes <= 3, changes


def test_unknown_service_rate_uses_twice_the_hint() -> None:
    """The first completions come a pod start after the first pods were asked for, too late for a second
    wave to start within the budget: a batch is sized for tasks twice as long as the hint says."""
    slow = replace(POLICY, task_seconds_hint=10.0)
    # 30 tasks of 10 s on 4 slots: 75 s of work by the hint, 150 s planned; at zero new pods serve 20 s each
    assert decide(seen(backlog=30), slow, Memory()).replicas == math.ceil(150 / 20 - 0.1)
    # once measured (at the hint), the same backlog needs half
    measured = decide(seen(backlog=30, service_rate=0.4), slow, Memory())
    assert measured.replicas == math.ceil(75 / 20 - 0.1) and "(measured)" in measured.reason


# -- queues whose backlog cannot be seen (Pub/Sub) -----------------------------------------------------------


def unseen(in_flight: float, current: int, backlog: int = 0, ready: int | None = None) -> Observation:
    return replace(
        seen(backlog=backlog, current=current),
        in_flight=in_flight,
        backlog_visible=False,
        ready_replicas=current if ready is None else ready,
    )


def test_saturated_workers_with_an_unseen_backlog_grow_by_headroom() -> None:
    """Every slot busy says nothing of what waits: grow until workers run 70 % busy (1 -> 2 -> 3 -> 5 -> 8)."""
    sizes = [1]
    for _ in range(4):
        current = sizes[-1]
        sizes.append(decide(unseen(in_flight=current * POLICY.concurrency, current=current), POLICY, Memory()).replicas)
    assert sizes == [1, 2, 3, 5, 8]
    reason = decide(unseen(in_flight=4, current=1), POLICY, Memory()).reason
    assert "70% busy" in reason and "not visible" in reason


def test_the_same_saturation_with_a_visible_backlog_of_zero_holds() -> None:
    """Where the queue shows it empty, full workers are exactly enough."""
    assert decide(seen(in_flight=8, current=2), POLICY, Memory()).replicas == 2


def test_an_unseen_backlog_pool_at_its_target_utilisation_holds_and_does_not_run_away_while_pods_start() -> None:
    assert decide(unseen(in_flight=2.8 * 3, current=3), POLICY, Memory()).replicas == 3
    # Two replicas asked for, one ready and saturated: the same 4 in flight still asks for 2, not 3.
    assert decide(unseen(in_flight=4, current=2, ready=1), POLICY, Memory()).replicas == 2


def test_a_trickle_in_flight_keeps_one_replica_and_seen_waiting_work_adds_to_it() -> None:
    assert decide(unseen(in_flight=0.05, current=1), POLICY, Memory()).replicas == 1
    # Refused pushes are work seen waiting: at zero, one refused push wakes the pool.
    assert decide(unseen(in_flight=0, current=0, backlog=1), POLICY, Memory()).replicas == 1


def test_a_batch_that_waited_has_only_the_rest_of_its_budget() -> None:
    """2 000 tasks sized on a 1 s hint; the first completions say 2 s. Re-planned with a fresh budget, the
    batch would miss it by the first sizing's error; its age leaves it 17 s, and the pool grows to it."""
    big = replace(POLICY, max_replicas=50)
    memory = decide(seen(backlog=2000, now=120.0), big, Memory()).memory
    first = decide(seen(backlog=2000, current=25, ready=0, now=121.0), big, memory)
    assert first.replicas == 50  # planned for 2 s tasks (twice the hint): all the pool may have
    late = seen(backlog=1778, in_flight=100, current=25, ready=25, now=133.0, service_rate=2.0, arrival_rate=1.0)
    fresh = decide(late, big, Memory())
    aged = decide(late, big, first.memory)
    assert "13s old, 17s of the budget left" in aged.reason
    assert aged.replicas > fresh.replicas
    assert aged.replicas == big.max_replicas
    # a backlog a budget's worth of arrivals explains is recent work, not an old batch: no ageing
    steady = seen(backlog=80, in_flight=12, current=3, now=133.0, service_rate=4.0, arrival_rate=3.0)
    assert "old" not in decide(steady, big, first.memory).reason
    # an empty reading ends the batch
    assert decide(seen(in_flight=4, current=1, now=140.0), big, aged.memory).memory.batch_since is None


def test_ready_replicas_count_for_as_long_as_starting_ones_on_a_late_backlog() -> None:
    """A backlog older than its 1 s budget: pods still starting serve it for a quarter of a pod start once
    ready, and the pod already serving serves it at least as long (it was counted for the 0.25 s left of
    the budget, which asked for a pod too many: 1 ready and 1 starting clear 21 two-second tasks)."""
    short = replace(POLICY, target_wait_seconds=1.0)
    memory = decide(seen(backlog=1, now=0.0), short, Memory()).memory
    reading = seen(backlog=21, current=2, ready=1, in_flight=4, now=10.0, arrival_rate=1.5)
    decision = decide(reading, short, memory)
    assert "0s of the budget left" in decision.reason
    assert decision.replicas == 2, decision.reason


def test_no_pod_is_asked_for_a_backlog_gone_before_it_could_serve() -> None:
    """Four pods asked for 7 s ago start within 3 s and, with the arrivals of the next pod start, leave
    nothing for a fifth pod asked for now, which would be ready 10 s from now: the pool holds 4. A backlog
    they cannot finish by then still grows the pool."""
    short = replace(POLICY, target_wait_seconds=1.0)
    memory = replace(decide(seen(backlog=1, now=0.0), short, Memory()).memory, asked_at=2.0)
    reading = seen(backlog=21, current=4, ready=0, now=9.0, arrival_rate=1.3)
    assert decide(reading, short, memory).replicas == 4
    assert decide(replace(reading, backlog=90), short, memory).replicas > 4


def test_a_queue_that_built_up_is_not_a_batch() -> None:
    """A burst that fills the queue over 20 s: its tasks' ages are spread, and the fresh budget serves a
    p95 target; only a queue found already holding more than a budget's worth of arrivals ages as one."""
    memory = decide(seen(backlog=3, current=1, now=240.0, arrival_rate=1.0), POLICY, Memory()).memory
    assert memory.batch_since is None and memory.backlog_seen
    later = decide(seen(backlog=260, in_flight=8, current=2, now=261.0, arrival_rate=5.0), POLICY, memory)
    assert "old" not in later.reason and later.memory.batch_since is None


# -- waking: the arrival model of the last busy spell ---------------------------------------------------------


def left_at(rate: float, at: float = 0.0) -> Memory:
    """A pool that was last busy at ``at`` with ``rate`` tasks/s arriving, its pod start learned at 10 s."""
    return Memory(last_busy_at=at, busy_arrival_rate=rate, startup_seconds=10.0)


SHORT = replace(POLICY, target_wait_seconds=0.5, max_replicas=50)


def test_a_pool_waking_from_zero_expects_the_rate_it_left_with() -> None:
    """On/off work comes back at the rate it left: at 8 tasks/s, the 80 tasks that queue while the first pods
    start are already past a 0.5 s budget; they are drained in one service time (a slot each, 1 s) on top
    of keeping up: 8/4 + 81/(4 x 1) = 22.25."""
    woken = decide(seen(backlog=1, now=300.0, service_rate=4.0), SHORT, left_at(8.0))
    assert woken.replicas == 23, woken.reason
    assert woken.memory.woke_at == 300.0 and woken.memory.wake_arrival_rate == 8.0
    # without a rate to remember, one task wakes one pod
    assert decide(seen(backlog=1, now=300.0, service_rate=4.0), SHORT, Memory()).replicas == 1
    # with a 30 s budget the same pool waits for the queue to say so
    assert decide(seen(backlog=1, now=300.0, service_rate=4.0), POLICY, left_at(8.0)).replicas == 1


def test_a_late_backlog_drains_in_a_quarter_of_the_budget_and_never_faster_than_a_task() -> None:
    """Tasks that queue while pods start are past a budget shorter than the start: each second more is a
    second over it, so they drain in a quarter of the budget, but no faster than one service time (a slot
    for each: more pods than waiting tasks finish nothing sooner). The drain used to take a quarter of the
    pod start whatever the budget, so no budget below a pod start woke faster than 2.5 s of drain."""
    wake = {
        budget: decide(
            seen(backlog=1, now=300.0, service_rate=4.0), replace(SHORT, target_wait_seconds=budget), left_at(8.0)
        ).replicas
        for budget in (0.1, 0.5, 4.0, 8.0)
    }
    # 8/4 + 81 / (4 x max(budget / 4, 1 s)): 22.25 for 0.1, 0.5 and 4 s, 12.1 for 8 s
    assert wake == {0.1: 23, 0.5: 23, 4.0: 23, 8.0: 13}, wake
    # tasks of 4 s (a replica serves 1 a second): a slot each for 4 s, 8/1 + 81 / (1 x 4) = 28.25
    slow_tasks = decide(seen(backlog=1, now=300.0, service_rate=1.0), SHORT, left_at(8.0))
    assert slow_tasks.replicas == 29, slow_tasks.reason


def test_a_wake_is_sized_once_and_held_while_its_pods_start() -> None:
    """Readings while the pods start see the queue grow by the rate planned for: the wake sized for it, so
    the pool holds until its pods are ready and measure. The pods count as starting since they were asked
    for, not since the reading that first saw them starting, nor since pods last joined them (counting
    them as just asked for added about a pod per reading until the first was ready)."""
    woken = decide(seen(backlog=1, now=300.0, service_rate=4.0), SHORT, left_at(8.0))
    memory, sizes = woken.memory, [woken.replicas]
    for second in range(1, 6):
        reading = seen(
            backlog=1 + 8 * second,
            current=sizes[-1],
            ready=0,
            now=300.0 + second,
            arrival_rate=0.8 * second,
            service_rate=4.0,
        )
        decision = decide(reading, SHORT, memory)
        memory = decision.memory
        sizes.append(decision.replicas)
    assert sizes == [23] * 6, sizes
    # a batch beyond the plan still grows the pool: 400 waiting 2 s in, not the 17 planned for
    bigger = decide(seen(backlog=400, current=23, ready=0, now=302.0, service_rate=4.0), SHORT, woken.memory)
    assert bigger.replicas > 23, bigger.reason
    # once every pod is ready the clock stops
    ready = decide(seen(backlog=0, in_flight=8, current=23, now=310.0, service_rate=4.0), SHORT, memory)
    assert ready.memory.asked_at is None


def test_the_remembered_rate_lasts_two_pod_starts() -> None:
    woken = decide(seen(backlog=1, now=300.0, service_rate=4.0), SHORT, left_at(8.0))
    reading = seen(in_flight=4, current=10, now=321.0, arrival_rate=1.0, service_rate=4.0)
    assert decide(reading, SHORT, replace(woken.memory, last_busy_at=320.0)).replicas < 10


def test_a_pool_held_at_its_minimum_wakes_from_a_silence_longer_than_a_pod_start() -> None:
    warm = replace(SHORT, min_replicas=1)
    after_silence = decide(seen(backlog=1, current=1, now=300.0, service_rate=4.0), warm, left_at(8.0, at=280.0))
    # the ready replica serves 40 of the 81 tasks that queue in a pod start: 2 + 41 / (4 x 1) = 12.25
    assert after_silence.replicas == 13 and after_silence.memory.woke_at == 300.0, after_silence.reason
    # busy a moment ago: a pool in the middle of its work, not a wake
    busy = decide(seen(backlog=1, current=1, now=300.0, service_rate=4.0), warm, left_at(8.0, at=299.0))
    assert busy.memory.woke_at is None and busy.replicas < 13
