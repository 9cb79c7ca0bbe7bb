"""The worker's Prometheus metrics, served at /metrics.

They live at module level in the default registry so that any part of the worker (the runtime, the
embedding batcher) can record into them without being handed an object; a process runs one worker.
Dead-letter reasons are a small fixed set, so the label stays cheap for Prometheus.

The operator scrapes these too, for queues whose backlog it cannot see (Pub/Sub): the busy slot-seconds
counter gives the exact mean of tasks in flight between two scrapes (its increase divided by the
elapsed time), where the in-flight gauge is only a sample, and every refused push is work that found
no free slot.
"""

from __future__ import annotations

import bisect
import collections
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Literal

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from swell_contract import metrics as names

DeadLetterReason = Literal["malformed", "oversized", "unknown_handler", "permanent_error", "max_attempts"]

TASKS_RECEIVED = Counter(names.TASKS_RECEIVED, "Deliveries received from the queue, redeliveries included.")
TASKS_SUCCEEDED = Counter(names.TASKS_SUCCEEDED, "Tasks whose handler succeeded and whose result was committed.")
TASKS_FAILED = Counter(names.TASKS_FAILED, "Handler runs that raised or timed out (each attempt counts).")
TASKS_RETRIED = Counter(names.TASKS_RETRIED, "Failed deliveries given back to the queue with a backoff.")
TASKS_DEAD_LETTERED = Counter(names.TASKS_DEAD_LETTERED, "Deliveries moved to the dead-letter destination.", ["reason"])
TASKS_IN_FLIGHT = Gauge(names.TASKS_IN_FLIGHT, "Tasks this worker holds now.")
WORKER_CONCURRENCY = Gauge(names.WORKER_CONCURRENCY, "Tasks this worker may hold at once.")
WORKER_UTILISATION = Gauge(names.WORKER_UTILISATION, "In-flight tasks divided by concurrency.")
PUSHES_REFUSED = Counter(
    names.PUSHES_REFUSED, "Pushed messages answered 429 because every slot was busy or the worker was draining."
)
TASK_DURATION = Histogram(
    names.TASK_DURATION,
    "Time from receiving a task to settling it, by handler.",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


class BusySlotSeconds(Collector):
    """The integral of tasks in flight over time, up to the moment of the scrape."""

    name = names.BUSY_SLOT_SECONDS

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0.0
        self._in_flight = 0
        self._since = time.monotonic()

    def _advance(self, now: float) -> None:
        self._total += self._in_flight * (now - self._since)
        self._since = now

    def set_in_flight(self, count: int) -> None:
        with self._lock:
            self._advance(time.monotonic())
            self._in_flight = count

    def value(self) -> float:
        with self._lock:
            self._advance(time.monotonic())
            return self._total

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            self.name,
            "Slot-seconds spent holding tasks; its rate is the mean number of tasks in flight.",
            value=self.value(),
        )


BUSY_SLOT_SECONDS = BusySlotSeconds()
REGISTRY.register(BUSY_SLOT_SECONDS)


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """Observe many values with one increment per bucket they fall in: the counts ``observe`` would give.

    ``observe`` takes two locks per value; a batch of fast tasks spent more time there than in its
    handlers. This reads the client's bucket bounds and values (a test compares it with ``observe``).
    """
    if not values:
        return
    bounds = histogram._upper_bounds
    for bucket, count in collections.Counter(bisect.bisect_left(bounds, value) for value in values).items():
        histogram._buckets[bucket].inc(count)
    histogram._sum.inc(math.fsum(values))


def record_in_flight(in_flight: int, concurrency: int) -> None:
    TASKS_IN_FLIGHT.set(in_flight)
    WORKER_UTILISATION.set(in_flight / concurrency)
    BUSY_SLOT_SECONDS.set_in_flight(in_flight)


def exposition() -> tuple[bytes, str]:
    """The text format for /metrics and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
