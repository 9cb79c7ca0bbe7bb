"""What a queue looks like from outside, for scaling: what every depth source reports."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Depth:
    # Messages waiting to be delivered to any worker.
    backlog: int
    # Messages delivered and not yet settled.
    in_flight: int
    # In-flight count per consumer (pod name) where the source can tell; empty where it cannot.
    per_consumer: dict[str, int] = field(default_factory=dict)
    # Messages settled (acked) so far, a monotonic counter where the queue keeps one; None if unknown.
    completed_total: int | None = None
    # Age in seconds of the oldest waiting message, where known.
    oldest_age_seconds: float | None = None
    # Mean tasks in flight since the previous reading, where the workers report it (Pub/Sub).
    mean_in_flight: float | None = None
    # False where the queue cannot tell what waits: ``backlog`` is then only the work seen waiting.
    backlog_visible: bool = True
