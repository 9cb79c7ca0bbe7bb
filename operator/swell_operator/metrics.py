"""The operator's Prometheus metrics, one series per pool (labels namespace, workerpool)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()
_LABELS = ("namespace", "workerpool")

QUEUE_BACKLOG = Gauge("swell_operator_queue_backlog", "Tasks waiting in the pool's queue.", _LABELS, registry=REGISTRY)
IN_FLIGHT = Gauge(
    "swell_operator_in_flight", "Tasks delivered to workers and not yet settled.", _LABELS, registry=REGISTRY
)
REPLICAS_DESIRED = Gauge(
    "swell_operator_replicas_desired", "Replicas the last decision asked for.", _LABELS, registry=REGISTRY
)
REPLICAS_CURRENT = Gauge(
    "swell_operator_replicas_current", "Replicas the Deployment has now.", _LABELS, registry=REGISTRY
)
DECISION_SECONDS = Histogram(
    "swell_operator_decision_seconds",
    "Time from the start of a queue read to the applied decision.",
    _LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
QUEUE_READ_ERRORS = Counter(
    "swell_operator_queue_read_errors_total", "Queue reads that failed.", _LABELS, registry=REGISTRY
)

# For alerts (the chart's PrometheusRule): a pool's Degraded condition and its backlog against its objective.
DEGRADED = Gauge(
    "swell_operator_pool_degraded", "1 while the pool's Degraded condition is True, else 0.", _LABELS, registry=REGISTRY
)
TARGET_WAIT_SECONDS = Gauge(
    "swell_operator_target_wait_seconds", "The pool's spec.scaling.targetWaitSeconds.", _LABELS, registry=REGISTRY
)
EXPECTED_WAIT_SECONDS = Gauge(
    "swell_operator_expected_wait_seconds",
    "Seconds the backlog takes to drain at the ready replicas' measured rate (+Inf with a backlog and no "
    "ready replica; unset until a service rate is measured).",
    _LABELS,
    registry=REGISTRY,
)

_PER_POOL = (
    QUEUE_BACKLOG,
    IN_FLIGHT,
    REPLICAS_DESIRED,
    REPLICAS_CURRENT,
    DECISION_SECONDS,
    QUEUE_READ_ERRORS,
    DEGRADED,
    TARGET_WAIT_SECONDS,
    EXPECTED_WAIT_SECONDS,
)


def expected_wait(backlog: int | None, ready: int | None, service_rate_per_replica: float | None) -> float | None:
    """Drain time of the backlog at the measured rate; None while it cannot be told."""
    if backlog is None:
        return None
    if backlog == 0:
        return 0.0
    if not ready:
        return float("inf")
    if not service_rate_per_replica:
        return None
    return backlog / (ready * service_rate_per_replica)


def record_health(
    namespace: str, pool: str, *, degraded: bool, target_wait: float, expected_wait_seconds: float | None
) -> None:
    labels = (namespace, pool)
    DEGRADED.labels(*labels).set(1 if degraded else 0)
    TARGET_WAIT_SECONDS.labels(*labels).set(target_wait)
    if expected_wait_seconds is not None:
        EXPECTED_WAIT_SECONDS.labels(*labels).set(expected_wait_seconds)


def forget_pool(namespace: str, pool: str) -> None:
    """Drop a deleted pool's series so dashboards do not show it forever."""
    for metric in _PER_POOL:
        with contextlib.suppress(KeyError):
            metric.remove(namespace, pool)


def serve(port: int, host: str = "0.0.0.0") -> None:
    start_http_server(port, addr=host, registry=REGISTRY)
