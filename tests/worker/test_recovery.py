"""Recovery after a consumer dies holding tasks, on both Redis backends, against a real redis-server.

A consumer is killed by closing its connection without its ``close()``: nothing is given back, its
heartbeat is left to expire, as after ``kill -9``. The live consumer then runs as a busy worker does: a
few free slots at a time, with newer tasks waiting. What it must show: the dead consumer's tasks reach it
within the consumer timeout (plus a claim tick), before the newer tasks, and the dead consumer does not
stay registered once it holds nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis
from swell_contract.task import Task
from swell_redis import open_redis
from swell_worker.backends.redis_list import RedisListConsumer
from swell_worker.backends.redis_streams import RedisStreamsConsumer

Consumer = RedisStreamsConsumer | RedisListConsumer

# A claim tick (at most a third of the consumer timeout) plus scheduling slack on a loaded machine.
SLACK_SECONDS = 1.0


def task_body(tag: str, i: int) -> bytes:
    return Task(id=f"{tag}-{i}", handler="noop", submitted_at=1_700_000_000.0).encode()


class Fleet:
    """Consumers of one backend on the test's Redis; the ones not killed are closed at the end."""

    def __init__(self, redis_url: str, kind: type[Consumer]) -> None:
        self.redis_url = redis_url
        self.kind = kind
        self.live: list[Consumer] = []

    def start(self, name: str, consumer_timeout: float) -> Consumer:
        consumer = self.kind(open_redis(self.redis_url), ["jobs"], name, consumer_timeout=consumer_timeout)
        self.live.append(consumer)
        return consumer

    async def kill(self, consumer: Consumer) -> None:
        """As ``kill -9`` leaves a consumer: connection gone, nothing given back, heartbeat left to expire."""
        self.live.remove(consumer)
        await consumer._redis.aclose()

    async def close(self) -> None:
        for consumer in self.live:
            await consumer.close()


@pytest.fixture(params=[RedisStreamsConsumer, RedisListConsumer], ids=["redis-streams", "redis-list"])
async def fleet(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    crew = Fleet(redis_url, request.param)
    yield crew
    await crew.close()


@pytest.fixture
async def streams_fleet(redis_url: str) -> AsyncIterator[Fleet]:
    crew = Fleet(redis_url, RedisStreamsConsumer)
    yield crew
    await crew.close()


async def enqueue(consumer: Consumer, bodies: list[bytes]) -> None:
    """Enqueue as a producer would (XADD, LPUSH), on the consumer's connection."""
    for data in bodies:
        if isinstance(consumer, RedisStreamsConsumer):
            await consumer._redis.xadd("jobs", {"body": data})
        else:
            await consumer._redis.lpush("jobs", data)


Reads = list[tuple[float, list[bytes]]]


async def run_busy(consumer: Consumer, until: Callable[[set[bytes]], bool], seconds: float) -> Reads:
    """Take two tasks at a time and settle them, as a busy worker whose slots free now and then; every read
    with the time it returned (monotonic)."""
    reads: Reads = []
    taken: set[bytes] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until(taken):
        batch = await consumer.consume(2, 0.05)
        await consumer.ack(batch)
        reads.append((time.monotonic(), [d.body for d in batch]))
        taken.update(d.body for d in batch)
        await asyncio.sleep(0.05)
    return reads


async def test_a_dead_consumers_tasks_go_to_a_live_one_within_the_timeout_before_newer_ones(
    fleet: Fleet, redis_url: str
) -> None:
    timeout = 1.5
    dead = fleet.start("dead", timeout)
    old = [task_body("old", i) for i in range(4)]
    await enqueue(dead, old)
    assert len(await dead.consume(4, 0.1)) == 4
    await fleet.kill(dead)
    died = time.monotonic()
    live = fleet.start("live", timeout)
    await enqueue(live, [task_body("new", i) for i in range(300)])

    reads = await run_busy(live, lambda taken: set(old) <= taken, timeout + 4 * SLACK_SECONDS)

    taken_at = {data: at for at, bodies in reads for data in bodies}
    assert set(old) <= set(taken_at), "the dead consumer's tasks were never taken over"
    assert max(taken_at[data] for data in old) - died <= timeout + SLACK_SECONDS
    # Before newer ones: from the first read that took an old task, reads take old tasks only until none is left.
    first = next(i for i, (_, bodies) in enumerate(reads) if set(bodies) & set(old))
    recovering = [data for _, bodies in reads[first : first + 2] for data in bodies]
    assert sorted(recovering) == sorted(old), [b[:20] for b in recovering]
    assert len([data for _, bodies in reads for data in bodies if data in old]) == len(old), "each taken once"

    # The dead consumer does not stay registered once it holds nothing.
    await run_busy(live, lambda taken: False, timeout / 3 + SLACK_SECONDS)
    client = redis.Redis.from_url(redis_url)
    try:
        assert b"dead" not in client.smembers("jobs:consumers")
        if isinstance(live, RedisStreamsConsumer):
            assert [c["name"] for c in client.xinfo_consumers("jobs", "swell")] == [b"live"]
    finally:
        client.close()


async def test_streams_a_closed_consumers_leftovers_are_taken_at_once(streams_fleet: Fleet, redis_url: str) -> None:
    """A consumer that closed while still holding entries (its drain ran out) has no heartbeat: another
    consumer takes its entries on its next claim tick, without waiting for the entries' idle time."""
    leaving, staying = streams_fleet.start("leaving", 30), streams_fleet.start("staying", 30)
    await enqueue(leaving, [task_body("left", i) for i in range(3)])
    assert len(await leaving.consume(3, 0.1)) == 3
    streams_fleet.live.remove(leaving)
    await leaving.close()
    taken = await staying.consume(10, 0.1)
    assert sorted(d.body for d in taken) == [task_body("left", i) for i in range(3)]
    assert all(d.attempt == 2 for d in taken)
    client = redis.Redis.from_url(redis_url)
    try:
        assert [c["name"] for c in client.xinfo_consumers("jobs", "swell")] == [b"staying"]
        assert client.smembers("jobs:consumers") == {b"staying"}
    finally:
        client.close()


async def test_streams_a_restarted_consumer_takes_its_previous_runs_entries_at_once(streams_fleet: Fleet) -> None:
    """A container restarted in its pod keeps its consumer name: its new run knows the old one is dead and
    runs the old run's entries first, each counted as a new attempt."""
    first_run = streams_fleet.start("pod-a", 30)
    await enqueue(first_run, [task_body("held", i) for i in range(3)] + [task_body("waiting", i) for i in range(3)])
    assert len(await first_run.consume(3, 0.1)) == 3
    await streams_fleet.kill(first_run)
    second_run = streams_fleet.start("pod-a", 30)
    taken = await second_run.consume(3, 0.1)
    assert sorted(d.body for d in taken) == [task_body("held", i) for i in range(3)]
    assert all(d.attempt == 2 for d in taken)
    following = await second_run.consume(3, 0.1)
    assert sorted(d.body for d in following) == [task_body("waiting", i) for i in range(3)]
