"""What a Pub/Sub pool reports as waiting, from the signals it has: pure, so every case is a line."""

from __future__ import annotations

from swell_operator.pubsub_admin import MonitoredBacklog
from swell_operator.pubsub_pool import seen_backlog, with_token, without_query
from swell_operator.worker_metrics import PoolFigures

MONITORED = MonitoredBacklog(messages=500, oldest_age_seconds=90.0, sampled_at=0.0)


def figures(mean_in_flight: float, answered: int = 2, refused: int = 0) -> PoolFigures:
    return PoolFigures(answered=answered, ready_answered=answered, mean_in_flight=mean_in_flight, refused=refused)


def test_refused_pushes_and_a_wake_up_are_work_seen_waiting() -> None:
    assert seen_backlog(figures(1.0, refused=3), waking=True, monitored=None, concurrency=4) == 4


def test_monitorings_late_count_counts_only_while_every_worker_is_saturated() -> None:
    assert seen_backlog(figures(7.6), waking=False, monitored=MONITORED, concurrency=4) == 500
    assert seen_backlog(figures(5.0), waking=False, monitored=MONITORED, concurrency=4) == 0  # headroom: old news
    assert seen_backlog(figures(0.0, answered=0), waking=True, monitored=MONITORED, concurrency=4) == 1


def test_the_push_token_goes_into_the_url_and_never_into_a_log_line() -> None:
    url = with_token("https://workers.example.com/pubsub/push", "s3cr&t")
    assert url == "https://workers.example.com/pubsub/push?token=s3cr%26t"
    assert without_query(url) == "https://workers.example.com/pubsub/push"
    assert with_token("https://a/push", None) == "https://a/push"


def test_a_throttled_call_is_due_once_per_interval() -> None:
    from swell_operator.pubsub_pool import Every

    every = Every(60.0)
    assert [every.due(), every.due()] == [True, False]
    assert Every(0.0).due() and Every(0.0).due()
