"""The Redis key layout around one queue (docs/architecture.md, "Redis key layout").

Workers write these keys and the operator reads them for depth, each with its own code: the layout is
what they share, so it is named here once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueKeys:
    """The keys of queue ``name`` (a list key or a stream name)."""

    name: str

    @property
    def delayed(self) -> str:
        """Retries waiting for their backoff: a zset scored by due time."""
        return f"{self.name}:delayed"

    @property
    def dead(self) -> str:
        return f"{self.name}:dead"

    @property
    def completed(self) -> str:
        """INCRBY on every ack batch, so the operator can measure the service rate."""
        return f"{self.name}:completed"

    @property
    def attempts(self) -> str:
        return f"{self.name}:attempts"

    @property
    def consumers(self) -> str:
        """The consumers that may hold tasks (a processing list, Streams pending entries): nobody has to SCAN."""
        return f"{self.name}:consumers"

    def processing(self, consumer: str) -> str:
        return f"{self.name}:processing:{consumer}"

    def heartbeat(self, consumer: str) -> str:
        return f"{self.name}:consumer:{consumer}"

    def last_take(self, consumer: str) -> str:
        """redis-list: the token and answer of a consumer's last take, so a repeated take gets the same."""
        return f"{self.name}:take:{consumer}"


def status_key(task_id: str) -> str:
    """The one record of a task: a hash with its state, result and attempts (docs/architecture.md)."""
    return f"swell:task:{task_id}"


def reply_key(task_id: str) -> str:
    """The list a request-reply caller waits on for the task's reply."""
    return f"reply:{task_id}"
