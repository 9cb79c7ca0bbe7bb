"""The operator's depth sources against a real redis-server, with queue state written by the key layout alone.

The state is made with plain Redis commands following ``swell_contract.keys`` (what workers write), so
these tests pin the operator's reading of the contract, not the worker's code.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis
from swell_contract.keys import QueueKeys
from swell_operator.depth_sources import DepthUnavailable, RedisListDepth, RedisStreamsDepth, connect

from tests.fixtures.ports import free_port


def task(task_id: str, submitted_at: float) -> bytes:
    return json.dumps({"id": task_id, "handler": "noop", "payload": {}, "submitted_at": submitted_at}).encode()


class RoundTrips:
    """Counts pipeline executions (one round trip each) of a source's client."""

    def __init__(self, source: Any) -> None:
        self.count = 0
        client = source._redis
        make = client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = make(*args, **kwargs)
            execute = pipe.execute

            async def counted(*a: Any, **k: Any) -> Any:
                self.count += 1
                return await execute(*a, **k)

            pipe.execute = counted
            return pipe

        client.pipeline = pipeline


@pytest.fixture
async def sources(redis_url: str) -> AsyncIterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(kind: str, *args: Any) -> Any:
        source = (RedisListDepth if kind == "list" else RedisStreamsDepth)(connect(redis_url, None), redis_url, *args)
        made.append(source)
        return source

    yield make
    for source in made:
        await source.close()


async def test_list_depth_counts_waiting_delayed_held_and_watched_keys(
    redis_url: str, sources: Callable[..., Any]
) -> None:
    r = redis.Redis.from_url(redis_url)
    high, low = QueueKeys("urgent"), QueueKeys("tasks")
    now = time.time()
    r.lpush(low.name, task("newer", now - 1), task("older-low", now - 2))
    r.rpush(low.name, task("oldest", now - 30))  # the consuming end (right) holds the next task
    r.lpush(high.name, task("h", now - 5))
    r.zadd(low.delayed, {b"1|n|x": now + 60})
    r.set(low.completed, 7)
    r.sadd(low.consumers, "pod-a", "pod-b")
    r.rpush(low.processing("pod-a"), b"t1", b"t2")
    r.sadd(high.consumers, "pod-a")
    r.rpush(high.processing("pod-a"), b"t3")
    r.sadd(low.consumers, "pod-gone")  # registered, its list already recovered: counts nothing
    r.hset("unacked", mapping={"x": 1, "y": 2})
    r.zadd("rq:wip:tasks", {"job": 1})

    source = sources("list", [high.name, low.name], [("hash", "unacked"), ("zset", "rq:wip:tasks")])
    depth = await source.read()

    assert depth.backlog == 1 + 3 + 1  # urgent, tasks, one delayed retry
    assert depth.per_consumer == {"pod-a": 3}
    assert depth.in_flight == 3 + 2 + 1
    assert depth.completed_total == 7
    assert depth.oldest_age_seconds is not None and 29 < depth.oldest_age_seconds < 40


async def test_list_depth_is_one_round_trip_while_the_registry_stands_and_exact_when_it_moves(
    redis_url: str, sources: Callable[..., Any]
) -> None:
    r = redis.Redis.from_url(redis_url)
    keys = QueueKeys("tasks")
    r.sadd(keys.consumers, "pod-a")
    r.rpush(keys.processing("pod-a"), b"t1")
    source = sources("list", [keys.name])
    trips = RoundTrips(source)

    assert (await source.read()).per_consumer == {"pod-a": 1}
    assert trips.count == 2  # the first read learns the registry
    r.rpush(keys.processing("pod-a"), b"t2")
    assert (await source.read()).per_consumer == {"pod-a": 2}
    assert trips.count == 3

    r.sadd(keys.consumers, "pod-b")
    r.rpush(keys.processing("pod-b"), b"t3")
    depth = await source.read()
    assert depth.per_consumer == {"pod-a": 2, "pod-b": 1} and depth.in_flight == 3
    assert depth.completed_total is None and depth.oldest_age_seconds is None
    assert trips.count == 5


async def test_list_depth_of_a_key_of_the_wrong_type_is_unavailable_with_the_reason(
    redis_url: str, sources: Callable[..., Any]
) -> None:
    redis.Redis.from_url(redis_url).set("tasks", "not a list")
    with pytest.raises(DepthUnavailable, match=r"Redis at redis://127\.0\.0\.1.* answered with an error.*WRONGTYPE"):
        await sources("list", ["tasks"]).read()


async def test_streams_depth_counts_lag_delayed_and_pending_per_consumer(
    redis_url: str, sources: Callable[..., Any]
) -> None:
    r = redis.Redis.from_url(redis_url)
    keys = QueueKeys("jobs")
    now_ms = int(time.time() * 1000)
    for i, age_ms in enumerate((60_000, 50_000, 40_000, 20_000)):
        r.xadd(keys.name, {"body": task(f"t{i}", 0)}, id=f"{now_ms - age_ms}-0")
    r.xgroup_create(keys.name, "g", id="0")
    r.xreadgroup("g", "pod-a", {keys.name: ">"}, count=2)
    r.xreadgroup("g", "pod-b", {keys.name: ">"}, count=1)
    r.zadd(keys.delayed, {b"2|n|x": time.time() + 30})
    r.set(keys.completed, 11)
    source = sources("streams", [keys.name], "g")
    trips = RoundTrips(source)

    depth = await source.read()
    assert depth.backlog == 1 + 1  # one entry after the cursor, one delayed retry
    assert depth.per_consumer == {"pod-a": 2, "pod-b": 1} and depth.in_flight == 3
    assert depth.completed_total == 11
    assert depth.oldest_age_seconds is not None and 19 < depth.oldest_age_seconds < 30  # the waiting one, not pending
    assert trips.count == 2

    assert (await source.read()).backlog == 2
    assert trips.count == 3  # the cursor stood still: one round trip


async def test_streams_depth_before_the_group_exists_counts_the_whole_stream(
    redis_url: str, sources: Callable[..., Any]
) -> None:
    r = redis.Redis.from_url(redis_url)
    r.xadd("jobs", {"body": b"x"})
    r.xadd("jobs", {"body": b"y"})
    source = sources("streams", ["jobs", "absent"], "g")
    depth = await source.read()
    assert (depth.backlog, depth.in_flight, depth.completed_total) == (2, 0, None)
    assert depth.oldest_age_seconds is not None and depth.oldest_age_seconds < 10


async def test_an_unreachable_redis_is_unavailable_without_its_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    source = RedisStreamsDepth(connect(url, None), url, ["jobs"], "g")
    with pytest.raises(DepthUnavailable, match=r"cannot reach Redis at redis://:\*\*\*@127\.0\.0\.1") as raised:
        await source.read()
    assert "hunter2" not in str(raised.value)
    await source.close()


async def test_a_durable_redis_raises_no_warning_and_one_without_aof_does(own_redis: Any) -> None:
    source = RedisListDepth(connect(own_redis.url, None), own_redis.url, ["tasks"])
    try:
        assert await source.durability_problem() is None
        own_redis.client().config_set("appendonly", "no")
        problem = await source.durability_problem()
    finally:
        await source.close()
    assert problem is not None and problem.startswith(f"Redis at {own_redis.url} has no append-only file")


async def test_a_separate_password_is_used_and_a_wrong_one_is_refused_without_being_said(own_redis: Any) -> None:
    own_redis.client().config_set("requirepass", "right-one")
    good = RedisListDepth(connect(own_redis.url, "right-one"), own_redis.url, ["tasks"])
    bad = RedisListDepth(connect(own_redis.url, "wrong-one"), own_redis.url, ["tasks"])
    try:
        assert (await good.read()).backlog == 0
        with pytest.raises(DepthUnavailable, match="refused the credentials") as refused:
            await bad.read()
        assert "wrong-one" not in str(refused.value) and "right-one" not in str(refused.value)
    finally:
        await good.close()
        await bad.close()
