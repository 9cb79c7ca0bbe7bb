"""The task envelope every backend carries.

One JSON shape for Redis lists, Redis Streams and Pub/Sub, so that the client, the worker and the
operator agree on what a task is whatever the queue. Decoding is strict: a body that is not a valid
envelope raises ``MalformedTask`` with a reason the worker writes to the dead-letter destination.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class MalformedTask(ValueError):
    """A message body that is not a task envelope; the message carries why."""


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Required on the wire: an id minted while decoding would differ on every redelivery.
    id: str = Field(min_length=1, max_length=200)
    handler: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)
    submitted_at: float = Field(default_factory=time.time)
    # Where the result goes (a Redis list key); None means nobody waits for a reply.
    reply_to: str | None = None
    priority: int = 0

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


def decode_task(body: bytes | str) -> Task:
    """Parse a message body into a Task, or raise MalformedTask saying what is wrong."""
    try:
        # One pass in pydantic-core for the common, valid body; the reason for a bad one comes below.
        return Task.model_validate_json(body)
    except ValidationError:
        pass
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own bound on nesting, below Python's recursion limit
            raise MalformedTask("body is JSON nested too deeply to decode") from None
        raise MalformedTask(f"body is not JSON: {exc}") from exc
    except RecursionError:
        raise MalformedTask("body is JSON nested too deeply to decode") from None
    if not isinstance(data, dict):
        raise MalformedTask(f"body is JSON {type(data).__name__}, expected an object")
    try:
        return Task.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise MalformedTask(f"not a task envelope: {problems}") from exc
