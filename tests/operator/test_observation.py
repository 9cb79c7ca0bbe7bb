"""What the operator hands the decision: every rate the estimator keeps that the decision reads."""

from __future__ import annotations

from swell_contract.depth import Depth
from swell_operator.deployment import Replicas
from swell_operator.rates import RateEstimator
from swell_operator.scaler import observation_of


def test_work_that_came_and_went_between_readings_reaches_the_decision() -> None:
    rates = RateEstimator(arrival_rate=1.5, slow_arrival_rate=1.2, last_arrivals=2.0, service_rate_per_replica=4.0)
    seen = observation_of(100.0, Depth(backlog=0, in_flight=0), Replicas(2, 2, {}), rates)
    assert seen.recent_arrival_rate == 2.0
    assert seen.arrival_rate == 1.5
    assert seen.steady_arrival_rate == 1.2
    assert seen.service_rate_per_replica == 4.0
    assert (seen.current_replicas, seen.ready_replicas, seen.now) == (2, 2, 100.0)


def test_the_mean_in_flight_over_the_interval_is_preferred_to_the_last_reading() -> None:
    depth = Depth(backlog=3, in_flight=4, mean_in_flight=2.5, per_consumer={"a": 4}, backlog_visible=False)
    seen = observation_of(1.0, depth, Replicas(1, 1, {}), RateEstimator())
    assert seen.in_flight == 2.5
    assert seen.backlog == 3
    assert seen.per_consumer_in_flight == {"a": 4}
    assert seen.backlog_visible is False
    assert seen.recent_arrival_rate is None
