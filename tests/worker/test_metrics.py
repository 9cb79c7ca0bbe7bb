"""The worker's metric helpers against prometheus_client itself."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from swell_worker.metrics import observe_many


def test_observing_a_batch_gives_what_observing_each_value_gives() -> None:
    values = [0.0, 0.004, 0.005, 0.0051, 0.07, 0.07, 3.0, 1e9, 2.5]
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    each = Histogram("duration", "d", ["handler"], buckets=(0.005, 0.1, 2.5), registry=one_by_one)
    many = Histogram("duration", "d", ["handler"], buckets=(0.005, 0.1, 2.5), registry=batched)
    for value in values:
        each.labels("noop").observe(value)
    observe_many(many.labels("noop"), values[:4])
    observe_many(many.labels("noop"), values[4:])
    observe_many(many.labels("noop"), [])

    def samples(registry: CollectorRegistry) -> list[str]:
        return [
            line
            for line in generate_latest(registry).decode().splitlines()
            if not line.startswith("#") and "_created" not in line
        ]

    assert samples(batched) == samples(one_by_one)
    assert 'duration_bucket{handler="noop",le="0.005"} 3.0' in samples(batched)
