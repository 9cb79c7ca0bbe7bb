"""The scaling decision, rule by rule, with no cluster and no clock: it is a pure function."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace

import pytest
from swell_operator.decision import Decision, Memory, Observation, Policy, decide

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
    in_flight: int = 0,
    current: int = 0,
    now: float = 1000.0,
    arrival_rate: float | None = None,
    service_rate: float | None = None,
) -> Observation:
    return Observation(
        now=now,
        backlog=backlog,
        in_flight=in_flight,
        per_consumer_in_flight={},
        arrival_rate=arrival_rate,
        service_rate_per_replica=service_rate,
        current_replicas=current,
        ready_replicas=current,
    )


def test_zero_stays_zero_when_nothing_is_queued() -> None:
    decision = decide(seen(), POLICY, Memory())
    assert decision.replicas == 0 and not decision.changed
    assert "nothing queued or in flight" in decision.reason


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
    ("backlog", "arrivals", "service", "expected"),
    [
        (120, None, None, 1),  # 120/30 = 4 tasks/s, one replica does 4/s (hint)
        (131, None, None, 1),  # 4.37/s is within the rounding tolerance of one replica
        (140, None, None, 2),
        (500, None, None, 5),  # 16.7/s over 4/s
        (500, 10.0, None, 7),  # 26.7/s
        (500, None, 2.0, 9),  # measured 2 tasks/s/replica: 16.7/2
        (5000, None, None, 10),  # capped at max
    ],
)
def test_replicas_drain_the_backlog_within_the_target_wait(
    backlog: int, arrivals: float | None, service: float | None, expected: int
) -> None:
    decision = decide(seen(backlog=backlog, arrival_rate=arrivals, service_rate=service), POLICY, Memory())
    assert decision.replicas == expected, decision.reason


def test_reason_names_the_numbers_it_used() -> None:
    reason = decide(seen(backlog=5000), POLICY, Memory()).reason
    assert "backlog 5000" in reason and "4.00 tasks/s/replica (hinted)" in reason
    assert "clamped to max 10" in reason and reason.endswith("-> 10 (from 0)")


def test_never_below_what_in_flight_work_needs() -> None:
    decision = decide(seen(in_flight=14, current=2), POLICY, Memory())
    assert decision.replicas == 4
    decision = decide(seen(in_flight=14, current=6, backlog=0), POLICY, Memory())
    assert decision.replicas >= 4


def test_scale_up_is_immediate_and_can_be_stepped() -> None:
    assert decide(seen(backlog=500, current=1), POLICY, Memory()).replicas == 5
    stepped = decide(seen(backlog=500, current=1), replace(POLICY, max_step_up=2), Memory())
    assert stepped.replicas == 3 and "step up limited to +2" in stepped.reason


def test_scale_down_waits_for_the_stabilisation_window() -> None:
    memory = decide(seen(backlog=500, current=5, now=0), POLICY, Memory()).memory
    lower = decide(seen(backlog=100, current=5, now=30), POLICY, memory)
    assert lower.replicas == 5 and "highest recommendation" in lower.reason
    later = decide(seen(backlog=100, current=5, now=61), POLICY, lower.memory)
    assert later.replicas == 1


def test_scale_down_step_limit() -> None:
    decision = decide(seen(backlog=30, current=8, now=0), replace(POLICY, max_step_down=2), Memory())
    assert decision.replicas == 6 and "step down limited to -2" in decision.reason


def test_to_zero_only_after_the_idle_time_with_nothing_left() -> None:
    memory = decide(seen(in_flight=1, current=1, now=0), POLICY, Memory()).memory
    assert decide(seen(current=1, now=29), POLICY, memory).replicas == 1
    assert "idle for 29s of 30s" in decide(seen(current=1, now=29), POLICY, memory).reason
    assert decide(seen(current=1, now=30), POLICY, memory).replicas == 0
    # anything in flight resets the idle clock
    busy = decide(seen(in_flight=1, current=1, now=25), POLICY, memory).memory
    assert decide(seen(current=1, now=40), POLICY, busy).replicas == 1


def test_min_and_max_clamp() -> None:
    policy = replace(POLICY, min_replicas=2, max_replicas=3)
    assert decide(seen(current=0), policy, Memory()).replicas == 2
    assert decide(seen(backlog=10_000, current=2), policy, Memory()).replicas == 3


def test_memory_survives_json_and_garbage_starts_afresh() -> None:
    decision = decide(seen(backlog=500, current=5, now=7.5), POLICY, Memory())
    text = json.dumps(decision.memory.to_json())
    assert Memory.from_json(json.loads(text)) == decision.memory
    for garbage in (None, {}, {"lastBusyAt": "soon"}, {"recommendations": [["x", 1]]}, [1, 2], {"lastBusyAt": "nan"}):
        assert Memory.from_json(garbage) == Memory()  # type: ignore[arg-type]


def test_memory_stays_bounded_by_the_window() -> None:
    memory = Memory()
    for t in range(1000):
        memory = decide(seen(backlog=t % 50, current=2, now=float(t)), POLICY, memory).memory
    assert len(memory.recommendations) <= 61


def test_more_backlog_never_means_fewer_replicas() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        current = rng.randint(0, 10)
        in_flight = rng.randint(0, 40)
        service = rng.choice([None, rng.uniform(0.1, 20)])
        arrivals = rng.choice([None, rng.uniform(0, 50)])
        backlog = rng.randint(0, 3000)
        more = backlog + rng.randint(1, 3000)
        a = decide(seen(backlog, in_flight, current, arrival_rate=arrivals, service_rate=service), POLICY, Memory())
        b = decide(seen(more, in_flight, current, arrival_rate=arrivals, service_rate=service), POLICY, Memory())
        assert b.replicas >= a.replicas
        assert POLICY.min_replicas <= a.replicas <= POLICY.max_replicas


def test_steady_load_does_not_flap() -> None:
    rng = random.Random(3)
    memory, replicas, changes = Memory(), 0, 0
    for t in range(600):
        backlog = max(0, int(rng.gauss(200, 20)))
        decision: Decision = decide(
            seen(backlog=backlog, in_flight=4 * replicas, current=replicas, now=float(t), arrival_rate=8.0,
                 service_rate=4.0),
            POLICY,
            memory,
        )
        memory = decision.memory
        changes += decision.changed
        replicas = decision.replicas
    assert changes <= 3, changes


def test_unknown_service_rate_uses_the_hint() -> None:
    slow = replace(POLICY, task_seconds_hint=10.0)
    assert decide(seen(backlog=60), slow, Memory()).replicas == math.ceil(2 / 0.4)


# -- queues whose backlog cannot be seen (Pub/Sub) -----------------------------------------------------------


def unseen(in_flight: float, current: int, backlog: int = 0, ready: int | None = None) -> Observation:
    return replace(seen(backlog=backlog, current=current), in_flight=in_flight, backlog_visible=False,
                   ready_replicas=current if ready is None else ready)


def test_saturated_workers_with_an_unseen_backlog_grow_by_headroom() -> None:
    """Every slot busy says nothing of what waits: grow until workers run 70 % busy (1 -> 2 -> 3 -> 5 -> 8)."""
    sizes = [1]
    for _ in range(4):
        current = sizes[-1]
        sizes.append(decide(unseen(in_flight=current * POLICY.concurrency, current=current), POLICY,
                            Memory()).replicas)
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
