"""The shared wake watch on a real Redis: one round trip wakes exactly the sleeping pools that got work."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from swell_operator.wake import PoolWake, RedisWatches, Watched


async def test_one_watch_per_server_wakes_only_the_pools_whose_queue_got_work(redis_url: str) -> None:
    watches = RedisWatches()
    wakes = {name: PoolWake() for name in ("list-a", "list-b", "stream-a")}
    for name, wake in wakes.items():
        backend = "redis-streams" if name.startswith("stream") else "redis-list"
        watches.watch(("ns", name), redis_url, None, Watched(backend, (f"wake-test:{name}",)), wake)
    assert len(watches.servers) == 1, "pools on one server share one watch"
    watch = next(iter(watches.servers.values()))
    producer = aioredis.Redis.from_url(redis_url)
    try:
        assert await watch.check_once() == 0  # nothing queued anywhere
        await producer.lpush("wake-test:list-a", "task")
        await producer.xadd("wake-test:stream-a", {"body": "task"})
        await producer.zadd("wake-test:list-b:delayed", {"retry": 1.0})  # a delayed retry is work too
        assert await watch.check_once() == 3
        assert all(await asyncio.gather(*(wake.wait(1.0) for wake in wakes.values())))
        assert await watch.check_once() == 0, "work already seen wakes nobody again"
        watches.forget(("ns", "list-a"))
        await producer.lpush("wake-test:list-a", "more")
        assert await watch.check_once() == 0, "a forgotten pool is not watched"
        assert not await wakes["list-a"].wait(0.3)
    finally:
        await watches.close()
        await producer.delete(*(f"wake-test:{name}" for name in wakes), "wake-test:list-b:delayed")
        await producer.aclose()


async def test_the_watch_task_wakes_a_pool_within_its_interval(redis_url: str) -> None:
    watches = RedisWatches()
    wake = PoolWake()
    watches.watch(("ns", "soon"), redis_url, None, Watched("redis-list", ("wake-test:soon",)), wake)
    producer = aioredis.Redis.from_url(redis_url)
    try:
        await asyncio.sleep(0.3)  # the watch has seen the queue empty
        await producer.lpush("wake-test:soon", "task")
        assert await wake.wait(2.0), "the running watch did not wake the pool"
    finally:
        await watches.close()
        await producer.delete("wake-test:soon")
        await producer.aclose()
