"""Depth of Redis Streams read by one consumer group: Redis tracks what each consumer holds (the PEL).

Waiting: the group's lag (entries after its cursor) plus delayed retries; where Redis does not report
the lag, the stream's length minus what is pending (acked entries are deleted, so the stream holds just
pending and waiting ones). A stream without the group yet counts whole. The oldest waiting entry is the
first after the group's cursor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from swell_contract.depth import Depth
from swell_contract.keys import QueueKeys

from swell_operator.depth_sources.redis_base import RedisDepthSource

# Per stream: XINFO GROUPS, XPENDING (summary), ZCARD delayed, GET completed, XLEN.
_PER_STREAM = 5

# Per stream, where its waiting entries start: "-" (no group yet) or "(<last delivered id>".
Cursors = tuple[str, ...]


class RedisStreamsDepth(RedisDepthSource[Cursors]):
    def __init__(
        self, client: aioredis.Redis, url: str, streams: Sequence[str], group: str, *, owned: bool = True
    ) -> None:
        super().__init__(client, url, owned=owned)
        self._keys = [QueueKeys(name) for name in streams]
        self._group = group

    def queue_known(self, pipe: Pipeline) -> int:
        for keys in self._keys:
            pipe.xinfo_groups(keys.name)
            pipe.xpending(keys.name, self._group)
            pipe.zcard(keys.delayed)
            pipe.get(keys.completed)
            pipe.xlen(keys.name)
        return _PER_STREAM * len(self._keys)

    def inputs(self, answers: Sequence[Any]) -> Cursors:
        cursors = []
        for i in range(len(self._keys)):
            group = _find_group(answers[_PER_STREAM * i], self._group)
            cursors.append("-" if group is None else f"({_text(group['last-delivered-id'])}")
        return tuple(cursors)

    def queue_dependent(self, pipe: Pipeline, inputs: Cursors) -> None:
        for keys, start in zip(self._keys, inputs, strict=True):
            pipe.xrange(keys.name, min=start, max="+", count=1)

    def depth(self, known: Sequence[Any], inputs: Cursors, dependent: Sequence[Any]) -> Depth:
        backlog, completed, completed_known = 0, 0, False
        per_consumer: dict[str, int] = {}
        for i in range(len(self._keys)):
            groups, pending, delayed, done, length = known[_PER_STREAM * i : _PER_STREAM * (i + 1)]
            group = _find_group(groups, self._group)
            held = 0
            if isinstance(pending, dict):
                held = int(pending["pending"])
                for entry in pending["consumers"] or ():
                    name = _text(entry["name"])
                    per_consumer[name] = per_consumer.get(name, 0) + int(entry["pending"])
            if group is None:
                backlog += _count(length)
            else:
                lag = group.get("lag")
                backlog += int(lag) if lag is not None else max(0, _count(length) - held)
            backlog += _count(delayed)
            if done is not None and not isinstance(done, Exception):
                completed, completed_known = completed + int(done), True
        oldest: float | None = None
        for entries in dependent:
            if isinstance(entries, list) and entries:
                added_ms = int(_text(entries[0][0]).split("-")[0])
                oldest = max(oldest or 0.0, max(0.0, time.time() - added_ms / 1000))
        return Depth(
            backlog=backlog,
            in_flight=sum(per_consumer.values()),
            per_consumer=per_consumer,
            completed_total=completed if completed_known else None,
            oldest_age_seconds=oldest,
        )


def _find_group(groups: Any, name: str) -> dict[str, Any] | None:
    if not isinstance(groups, list):
        return None  # the stream does not exist yet
    for group in groups:
        if _text(group["name"]) == name:
            return dict(group)
    return None


def _count(value: Any) -> int:
    return 0 if value is None or isinstance(value, Exception) else int(value)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
