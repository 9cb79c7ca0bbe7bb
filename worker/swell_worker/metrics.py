"""The worker's Prometheus metrics, served at /metrics.

They live at module level in the default registry so that any part of the worker (the runtime, the
embedding batcher) can record into them without being handed an object; a process runs one worker.
Dead-letter reasons are a small fixed set, so the label stays cheap for Prometheus.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

DeadLetterReason = Literal["malformed", "oversized", "unknown_handler", "permanent_error", "max_attempts"]

TASKS_RECEIVED = Counter("swell_tasks_received", "Deliveries received from the queue, redeliveries included.")
TASKS_SUCCEEDED = Counter(
    "swell_tasks_succeeded", "Tasks whose handler succeeded and whose result was committed."
)
TASKS_FAILED = Counter("swell_tasks_failed", "Handler runs that raised or timed out (each attempt counts).")
TASKS_RETRIED = Counter("swell_tasks_retried", "Failed deliveries given back to the queue with a backoff.")
TASKS_DEAD_LETTERED = Counter(
    "swell_tasks_dead_lettered", "Deliveries moved to the dead-letter destination.", ["reason"]
)
TASKS_IN_FLIGHT = Gauge("swell_tasks_in_flight", "Tasks this worker holds now.")
WORKER_CONCURRENCY = Gauge("swell_worker_concurrency", "Tasks this worker may hold at once.")
WORKER_UTILISATION = Gauge("swell_worker_utilisation", "In-flight tasks divided by concurrency.")
TASK_DURATION = Histogram(
    "swell_task_duration_seconds",
    "Time from receiving a task to settling it, by handler.",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def exposition() -> tuple[bytes, str]:
    """The text format for /metrics and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
