"""Smoke test of the policy benchmark: the simulator on a short trace, and the frontier arithmetic."""

from __future__ import annotations

import random

import pytest

from bench.policy.__main__ import KEDA_DEFAULT, Point, Setting, cheapest_within, dominance, frontier, make_scaler
from bench.policy.policies import KedaHpa, Seen, Swell
from bench.policy.simulator import STOP_SECONDS, UNSTARTED_STOP_SECONDS, percentile, simulate
from bench.policy.traces import TRACES, Trace


def short_trace(seed: int = 1) -> Trace:
    """200 one-second tasks over the first minute."""
    rng = random.Random(seed)
    return sorted((rng.uniform(0, 60), 1.0) for _ in range(200))


def test_the_simulator_serves_every_task_and_never_beats_the_lower_bound() -> None:
    trace = short_trace()
    bound = sum(service for _, service in trace) / 4
    for scaler in (Swell(4, 50), KedaHpa(4, 50)):
        result = simulate(trace, scaler, concurrency=4, startup_seconds=10, drain_idle_first=True)
        assert len(result.waits) == len(trace) and result.unfinished == 0
        assert result.replica_seconds >= bound
        assert min(result.waits) >= 0
    swell = simulate(trace, Swell(4, 50), concurrency=4, startup_seconds=10, drain_idle_first=True)
    keda = simulate(trace, KedaHpa(4, 50), concurrency=4, startup_seconds=10, drain_idle_first=False)
    # KEDA's defaults keep the pool 300 s after the last activity and poll every 30 s; Swell does neither
    assert swell.replica_seconds < keda.replica_seconds
    assert percentile(swell.waits, 0.95) <= percentile(keda.waits, 0.95)


def test_the_keda_poll_phase_moves_a_burst_wait() -> None:
    """A burst just after a poll waits for the next one; with the phase drawn per seed it does not always."""
    burst = [(120.2, 1.0)] * 40
    waits = set()
    for phase in (0.0, 0.5, 0.95):
        scaler = make_scaler(Setting("keda", tuple(sorted(KEDA_DEFAULT.items()))), phase)
        result = simulate(burst, scaler, concurrency=4, startup_seconds=10, drain_idle_first=False)
        waits.add(round(min(result.waits)))
    assert len(waits) == 3


def test_frontier_keeps_only_points_nothing_beats_on_both() -> None:
    points = [Point(1.0, 500), Point(2.0, 400), Point(2.5, 450), Point(3.0, 300), Point(0.5, 900), Point(3.0, 350)]
    assert [(p.p95, p.replica_seconds) for p in frontier(points)] == [(0.5, 900), (1.0, 500), (2.0, 400), (3.0, 300)]
    assert cheapest_within(frontier(points), 2.7) == Point(2.0, 400)
    assert cheapest_within(frontier(points), 0.4) is None


def test_dominance_counts_beaten_not_beaten_and_out_of_reach() -> None:
    swell = [Point(1.0, 300), Point(3.9, 200)]
    baseline = [Point(0.2, 900), Point(1.05, 400), Point(4.0, 250), Point(6.0, 190)]
    verdict = dominance(swell, baseline)
    assert verdict["beaten"] == 2  # 1.05 s (a tie on the 0.1 s clock with Swell's 1.0 s) and 4.0 s
    assert [p["p95"] for p in verdict["out_of_reach"]] == [0.2]
    assert [p["p95"] for p in verdict["not_beaten"]] == [6.0]
    assert verdict["worst_ratio"] == round(200 / 190, 3) and not verdict["dominates"]
    assert dominance(swell, [Point(2.0, 301)])["dominates"]


def test_dominance_gives_the_seed_to_seed_spread_of_its_worst_ratio() -> None:
    """Each seed is its own trace, run by both policies: the paired differences say how far the worst ratio
    would move on other seeds (its standard error), so a margin of 1 % is not read as a win or a loss."""
    swell = [Point(1.0, 110, per_seed=(100.0, 120.0))]
    baseline = [Point(1.0, 114, per_seed=(110.0, 118.0)), Point(5.0, 200, per_seed=(190.0, 210.0))]
    verdict = dominance(swell, baseline)
    assert verdict["worst_ratio"] == round(110 / 114, 3)
    # differences -10 and +2: standard deviation 8.49, over sqrt(2) seeds 6.0, over the baseline's 114
    assert verdict["worst_ratio_se"] == round(6.0 / 114, 3)
    assert dominance([Point(1.0, 110)], baseline)["worst_ratio_se"] is None  # one seed, or none recorded


def test_every_trace_is_reproducible_from_its_seed() -> None:
    for make in TRACES.values():
        assert make(random.Random(3)) == make(random.Random(3))


class Scripted:
    """A scaler that asks for the replicas of a schedule: (from time, replicas), in order."""

    name = "scripted"
    interval = 0.5

    def __init__(self, schedule: list[tuple[float, int]]) -> None:
        self.schedule = schedule

    def desired(self, seen: Seen) -> int:
        return [n for t, n in self.schedule if seen.now >= t][-1]


def test_a_pod_cut_while_starting_lives_out_its_grace_period_and_serves_meanwhile() -> None:
    """Asked for at 0, cut at 5 (still starting): the pod is ready at 10, takes the queue's tasks, and is
    killed at 35 with a 100 s task in hand, which goes back to the queue for the pod asked for at 40
    (ready at 50: the task's wait is 38 s, its first pick-up at 12 does not count)."""
    trace = [(12.0, 100.0), (12.0, 1.0)]
    result = simulate(
        trace,
        Scripted([(0.0, 1), (5.0, 0), (40.0, 1), (160.0, 0)]),
        concurrency=4,
        startup_seconds=10,
        drain_idle_first=True,
    )
    assert result.unfinished == 0 and len(result.waits) == 2
    # the 1 s task was served by the pod that was cut (at 12, no wait); the 100 s one waited 38 s for the new pod
    assert sorted(round(w) for w in result.waits) == [0, 38]
    # the cut pod cost 35 s (0 to UNSTARTED_STOP_SECONDS after the cut); the second from 40 to 160 + 2
    assert result.replica_seconds == pytest.approx(5 + UNSTARTED_STOP_SECONDS + (160 - 40) + STOP_SECONDS, abs=0.6)


def test_an_idle_ready_pod_goes_stop_seconds_after_its_deployment_shrinks() -> None:
    result = simulate(
        [(12.0, 1.0)], Scripted([(0.0, 1), (20.0, 0)]), concurrency=4, startup_seconds=10, drain_idle_first=True
    )
    assert result.replica_seconds == pytest.approx(20 + STOP_SECONDS, abs=0.6)


def test_baselines_are_reused_only_from_the_same_grid() -> None:
    """A run that changes only Swell may reuse an earlier run's KEDA and KPA rows, never another grid's."""
    from bench.policy.__main__ import CONCURRENCY, MAX_REPLICAS, all_settings, reusable_baselines

    rows = [
        {"trace": "steady", "family": s.family, "setting": s.as_dict()}
        for s in all_settings(quick=True)
        if s.family != "swell"
    ]
    earlier = {
        "seeds": [1],
        "pod_startup_seconds": 10.0,
        "concurrency_per_pod": CONCURRENCY,
        "max_replicas": MAX_REPLICAS,
        "rows": rows,
    }
    assert reusable_baselines(earlier, ["steady"], [1], 10.0, quick=True) == rows
    with pytest.raises(SystemExit, match="seeds"):
        reusable_baselines(earlier, ["steady"], [1, 2], 10.0, quick=True)
    with pytest.raises(SystemExit, match="grid"):
        reusable_baselines({**earlier, "rows": rows[1:]}, ["steady"], [1], 10.0, quick=True)
    with pytest.raises(SystemExit, match="grid"):
        reusable_baselines(earlier, ["steady", "on-off"], [1], 10.0, quick=True)
