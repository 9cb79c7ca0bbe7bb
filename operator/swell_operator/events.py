"""Kubernetes Events for what a person watching `kubectl describe wp` needs: scaling changes and failures.

Events are posted on changes only (a new replica count, a new failure, a recovery), never per poll,
so they stay readable and cheap. Posting goes through kopf's background poster, which never blocks
or fails the scaler.
"""

from __future__ import annotations

from typing import Any

import kopf


def scaled(body: Any, previous: int, replicas: int, reason: str) -> None:
    kopf.event(body, type="Normal", reason="Scaled", message=f"replicas {previous} -> {replicas}: {reason}")


def queue_unreadable(body: Any, message: str) -> None:
    kopf.event(body, type="Warning", reason="QueueUnreadable", message=message)


def queue_recovered(body: Any) -> None:
    kopf.event(body, type="Normal", reason="QueueRecovered", message="the queue can be read again")


def scale_failed(body: Any, message: str) -> None:
    kopf.event(body, type="Warning", reason="ScaleFailed", message=message)


def fallback(body: Any, replicas: int, failures: int) -> None:
    kopf.event(
        body,
        type="Warning",
        reason="Fallback",
        message=f"{failures} failed queue reads in a row: running the fallback of {replicas} replicas",
    )


def cannot_wake(body: Any, message: str) -> None:
    kopf.event(body, type="Warning", reason="CannotWake", message=message)


def redis_not_durable(body: Any, message: str) -> None:
    kopf.event(body, type="Warning", reason="RedisNotDurable", message=message)


def dead_letter_not_set(body: Any, message: str) -> None:
    kopf.event(body, type="Warning", reason="DeadLetterNotSet", message=message)
