"""Names of the worker's Prometheus series: the worker exposes them, the operator scrapes some of them.

Counters are named here without the ``_total`` suffix that prometheus-client adds to their samples;
``sample`` gives the name a scraper sees.
"""

from __future__ import annotations

TASKS_RECEIVED = "swell_tasks_received"
TASKS_SUCCEEDED = "swell_tasks_succeeded"
TASKS_FAILED = "swell_tasks_failed"
TASKS_RETRIED = "swell_tasks_retried"
TASKS_DEAD_LETTERED = "swell_tasks_dead_lettered"
TASKS_IN_FLIGHT = "swell_tasks_in_flight"
WORKER_CONCURRENCY = "swell_worker_concurrency"
WORKER_UTILISATION = "swell_worker_utilisation"
PUSHES_REFUSED = "swell_pushes_refused"
TASK_DURATION = "swell_task_duration_seconds"
# Slot-seconds spent holding tasks: its increase over an interval divided by the interval is the exact
# mean of tasks in flight, where the in-flight gauge is only a sample.
BUSY_SLOT_SECONDS = "swell_worker_busy_slot_seconds"


def sample(counter: str) -> str:
    """The sample name of a counter in the text exposition."""
    return f"{counter}_total"
