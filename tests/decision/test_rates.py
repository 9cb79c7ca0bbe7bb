"""Arrival and service rates from successive readings."""

from __future__ import annotations

from collections.abc import Sequence

from swell_operator.rates import RateEstimator


def feed(samples: Sequence[tuple[float, int, int, int | None, int]]) -> RateEstimator:
    estimator = RateEstimator()
    for sample in samples:
        estimator = estimator.observe(*sample)
    return estimator


def test_nothing_is_known_from_one_reading() -> None:
    one = RateEstimator().observe(0.0, 10, 0, 0, 1)
    assert one.arrival_rate is None and one.service_rate_per_replica is None


def test_steady_arrivals_and_saturated_service_converge() -> None:
    # 10 tasks/s arrive, 2 replicas complete 8/s in all while a backlog grows by 2/s
    samples = [(float(t), 100 + 2 * t, 8, 8 * t, 2) for t in range(600)]
    estimator = feed(samples)
    assert estimator.arrival_rate is not None and abs(estimator.arrival_rate - 10.0) < 0.1
    assert estimator.service_rate_per_replica is not None and abs(estimator.service_rate_per_replica - 4.0) < 0.1


def test_idle_workers_say_nothing_about_capacity() -> None:
    samples = [(float(t), 0, 1, t, 4) for t in range(60)]
    assert feed(samples).service_rate_per_replica is None


def test_a_one_off_burst_is_backlog_not_a_rate() -> None:
    burst = feed([(0.0, 0, 0, 0, 0), (0.1, 500, 0, 0, 0)])
    assert burst.arrival_rate is not None and burst.arrival_rate <= 500 / 60 + 0.01


def test_a_counter_reset_is_skipped_not_negative() -> None:
    estimator = feed([(0.0, 50, 4, 1000, 1), (1.0, 46, 4, 1004, 1), (2.0, 42, 4, 3, 1)])
    assert estimator.arrival_rate is not None and estimator.arrival_rate >= 0
    assert estimator.service_rate_per_replica == 4.0


def test_json_round_trip_and_garbage() -> None:
    estimator = feed([(0.0, 50, 4, 1000, 1), (1.0, 46, 4, 1004, 1)])
    assert RateEstimator.from_json(estimator.to_json()) == estimator
    assert RateEstimator.from_json({"lastTime": "yesterday"}) == RateEstimator()
    assert RateEstimator.from_json(None) == RateEstimator()


def test_capacity_from_littles_law_is_not_biased_by_idle_slots() -> None:
    # one replica of concurrency 4, tasks take 1 s, only 2 arrive per second: 2 in flight on average
    samples = [(float(t), 0, 2, 2 * t, 1, 4) for t in range(100)]
    estimator = RateEstimator()
    for sample in samples:
        estimator = estimator.observe(*sample)
    assert estimator.service_seconds is not None and abs(estimator.service_seconds - 1.0) < 0.01
    assert estimator.service_rate_per_replica is not None and abs(estimator.service_rate_per_replica - 4.0) < 0.05


def test_service_time_is_a_ratio_of_averages_not_an_average_of_ratios() -> None:
    """3 tasks in flight, 2 then 4 completions a second: 3 / 3 per second = 1 s. Averaging the per-second
    ratios (1.5 s and 0.75 s) would say 1.125 s, 12 % slow; that bias scaled a steady pool out for nothing."""
    estimator, completed = RateEstimator(), 0
    for t in range(300):
        completed += 2 if t % 2 else 4
        estimator = estimator.observe(float(t), 0, 3, completed, 1, 4)
    assert estimator.service_seconds is not None and abs(estimator.service_seconds - 1.0) < 0.02


def test_pods_taking_a_batch_at_once_give_no_service_sample() -> None:
    """Pods become ready between two readings and take 20 tasks: the interval's in-flight average is not
    the 10 the two readings suggest, so it teaches nothing; the steady seconds after it do."""
    estimator = RateEstimator().observe(0.0, 500, 0, 0, 5, 4)
    estimator = estimator.observe(1.0, 480, 20, 12, 5, 4)  # a jump from 0 to 20 in flight
    assert estimator.service_seconds is None
    completed = 12
    for t in range(2, 40):
        completed += 10
        estimator = estimator.observe(float(t), 480 - 10 * t, 20, completed, 5, 4)
    assert estimator.service_seconds is not None and abs(estimator.service_seconds - 2.0) < 0.01


def test_a_steady_ramp_is_followed_at_the_fast_pace() -> None:
    """0 to 8 tasks/s over 10 minutes: the reported rate lags by about 10 s of the ramp, not 60 s."""
    estimator, arrived = RateEstimator(), 0.0
    for t in range(601):
        arrived += 8.0 * t / 600
        estimator = estimator.observe(float(t), 0, 0, int(arrived), 1)
    assert estimator.arrival_rate is not None and estimator.slow_arrival_rate is not None
    assert abs(estimator.arrival_rate - 8.0) < 0.3 and estimator.arrival_rate > estimator.slow_arrival_rate + 0.5


def test_a_step_up_that_keeps_coming_is_a_rate_not_a_burst() -> None:
    """Nothing, then 8 tasks/s: within 15 s the reported rate is the fast average, not the slow one."""
    estimator = feed([(float(t), 0, 0, 0, 1) for t in range(60)])
    for t in range(60, 75):
        estimator = estimator.observe(float(t), 0, 0, 8 * (t - 59), 1)
    assert estimator.fast_arrival_rate is not None and estimator.slow_arrival_rate is not None
    assert estimator.fast_arrival_rate > 2 * estimator.slow_arrival_rate
    assert estimator.arrival_rate == estimator.fast_arrival_rate and estimator.arrival_rate > 6.0
    # the one-off batch of the burst test stays backlog once the next reading shows no more coming
    burst = feed([(0.0, 0, 0, 0, 0), (1.0, 500, 0, 0, 0), (2.0, 500, 0, 0, 0)])
    assert burst.arrival_rate == burst.slow_arrival_rate


def test_one_completion_is_not_a_service_time() -> None:
    """A pod takes 4 tasks at once and the first second completes one of them: Little's law would say
    4 s for tasks of 1 s (the first done are the shortest), and a pool sized on it asked for 10 pods
    where one drained the backlog. The time is reported once a pod's slots' worth have completed."""
    estimator = RateEstimator().observe(0.0, 21, 4, 0, 1, 4)
    estimator = estimator.observe(1.0, 20, 4, 1, 1, 4)
    assert estimator.service_seconds is None and estimator.service_rate_per_replica is None
    estimator = estimator.observe(2.0, 17, 4, 4, 1, 4)
    assert estimator.service_seconds is not None


def test_the_first_seconds_of_service_are_averaged_not_smoothed_from_the_first() -> None:
    """4 in flight, 2 then 4 completions a second: the mean of the samples so far, 4 / 3.6 per second,
    not an EWMA started at the first second's 2 s that would still read 1.7 s after 5 seconds."""
    estimator, completed = RateEstimator().observe(0.0, 0, 4, 0, 1, 4), 0
    for t, done in enumerate((2, 4, 4, 4, 4), start=1):
        completed += done
        estimator = estimator.observe(float(t), 0, 4, completed, 1, 4)
    assert estimator.service_seconds is not None and abs(estimator.service_seconds - 4 / 3.6) < 0.01
    # the count of what was sampled survives the status round trip, and old statuses read as long sampled
    assert RateEstimator.from_json(estimator.to_json()) == estimator
    old = {k: v for k, v in estimator.to_json().items() if not k.startswith("serviceSampled")}
    assert RateEstimator.from_json(old).service_sampled_completions >= 4


def test_an_empty_queue_seen_without_a_reading_dates_the_arrivals_of_a_wake() -> None:
    """A pool asleep on the shared watch is not read for minutes; the watch saw its queue empty a quarter
    second before the first task. Folded in, that sighting makes the wake read the tasks' own rate (a
    trickle stays a trickle, not a batch that landed) and equals readings of the empty queue all along."""
    asleep = RateEstimator().observe(0.0, 0, 0, 100, 0, 4)
    seen = asleep.saw_empty(299.75, 4)
    woke = seen.observe(300.0, 1, 0, 100, 0, 4)
    read_all_along = feed([(float(t), 0, 0, 100, 0) for t in range(300)]).observe(299.75, 0, 0, 100, 0, 4)
    assert seen.arrival_rate == read_all_along.arrival_rate == 0.0
    blind = asleep.observe(300.0, 1, 0, 100, 0, 4)  # the one task averaged over the whole sleep
    assert blind.arrival_rate is not None and woke.arrival_rate is not None
    assert blind.arrival_rate < 1 / 250 < 0.09 < woke.arrival_rate
    assert woke.last_completed == 100  # no completions were made up for the sighting
    assert asleep.saw_empty(-1.0, 4) == asleep, "a sighting before the last reading says nothing new"
    busy = RateEstimator().observe(0.0, 5, 0, 100, 0, 4)
    assert busy.saw_empty(10.0, 4).last_queued == 0
