"""The shared wake watch on a real Redis: one round trip wakes exactly the sleeping pools that got work."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from swell_contract.keys import QueueKeys
from swell_operator.depth import QueueReader
from swell_operator.model import Queue, RedisConnection
from swell_operator.secrets import SecretReads
from swell_operator.wake import QUEUED_SCRIPT, PoolWake, RedisWatches, Watched, script_arguments


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


async def test_a_processing_list_left_by_a_registered_consumer_wakes_a_sleeping_list_pool(redis_url: str) -> None:
    """A pod cut during its drain can leave tasks in its processing list after the pool fell asleep: the
    watch sees them at once (the consumer registry, never a scan), not at the pool's slow safety-net read."""
    watches = RedisWatches()
    wake = PoolWake()
    keys = QueueKeys("wake-test:left")
    watches.watch(("ns", "left"), redis_url, None, Watched("redis-list", (keys.name,)), wake)
    watch = next(iter(watches.servers.values()))
    producer = aioredis.Redis.from_url(redis_url)
    try:
        await producer.sadd(keys.consumers, "gone-pod")
        assert await watch.check_once() == 0, "a registered consumer holding nothing is no work"
        await producer.lpush(keys.processing("gone-pod"), "task")
        assert await watch.check_once() == 1
        assert await wake.wait(1.0)
    finally:
        await watches.close()
        await producer.delete(keys.consumers, keys.processing("gone-pod"))
        await producer.aclose()


async def test_an_idle_tick_names_each_queue_once_and_gets_an_empty_answer(redis_url: str) -> None:
    """The tick the operator pays for every quarter second: one name per queue out (the script derives the
    delayed set and consumer registry from it), and nothing back while every pool sleeps."""
    watches = RedisWatches()
    for n in range(300):
        backend = "redis-streams" if n % 2 else "redis-list"
        queues = (f"wake-test:idle-{n}", f"wake-test:idle-{n}-b") if n % 3 == 0 else (f"wake-test:idle-{n}",)
        watches.watch(("ns", f"idle-{n}"), redis_url, None, Watched(backend, queues), PoolWake())
    watch = next(iter(watches.servers.values()))
    keys, args, _ = script_arguments([entry.watched for entry in watch.pools.values()])
    assert len(keys) == 400, "one key per queue"
    assert len(args) == 4, "the argument list does not grow with the pools"
    producer = aioredis.Redis.from_url(redis_url)
    try:
        assert await watch.check_once() == 0
        assert await producer.eval(QUEUED_SCRIPT, len(keys), *keys, *args) == [], "idle: an empty answer"
        await producer.lpush("wake-test:idle-6-b", "task")
        answer = await producer.eval(QUEUED_SCRIPT, len(keys), *keys, *args)
        assert [keys[answer[0] - 1], answer[1]] == ["wake-test:idle-6-b", 1], "only queues with work answer"
    finally:
        await watches.close()
        await producer.delete("wake-test:idle-6-b")
        await producer.aclose()


async def test_a_pool_watched_after_the_first_tick_and_every_queue_of_a_pool_count(redis_url: str) -> None:
    watches = RedisWatches()
    first, late = PoolWake(), PoolWake()
    watches.watch(("ns", "first"), redis_url, None, Watched("redis-list", ("wake-test:first",)), first)
    watch = next(iter(watches.servers.values()))
    producer = aioredis.Redis.from_url(redis_url)
    names = ("wake-test:late-a", "wake-test:late-b")
    try:
        assert await watch.check_once() == 0
        watches.watch(("ns", "late"), redis_url, None, Watched("redis-streams", names), late)
        await producer.xadd(names[1], {"body": "task"})
        assert await watch.check_once() == 1, "a pool that joined after the first tick is watched"
        assert await late.wait(0.5)
        await producer.xadd(names[0], {"body": "task"})
        assert await watch.check_once() == 1, "work on the pool's other queue changes its total"
        assert await late.wait(0.5)
        await producer.set("wake-test:first", "not a list")
        assert await watch.check_once() == 0, "a key of the wrong type counts 0 and breaks nobody's answer"
        await producer.delete(*names)
        assert await watch.check_once() == 0, "a pool whose work is gone wakes nobody"
        await producer.xadd(names[0], {"body": "again"})
        assert await watch.check_once() == 1, "work that comes back after an empty tick wakes again"
    finally:
        await watches.close()
        await producer.delete(*names, "wake-test:first")
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


class _SecretsOf(SecretReads):
    """Secrets that name ``url``: these tests need no API server."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def redis_server(self, namespace: str, redis: RedisConnection) -> tuple[str, str | None]:
        return self.url, None


async def test_depth_reads_and_the_watch_of_one_server_share_one_client(redis_url: str) -> None:
    """A thousand sleeping pools must not hold a thousand Redis clients: readers and the watch share one."""
    watches = RedisWatches()
    queues = [
        Queue.model_validate(
            {"backend": "redis-list", "redis": {"urlSecretRef": {"name": "r", "key": "url"}}, "list": {"keys": [name]}}
        )
        for name in ("share-a", "share-b")
    ]
    readers = [QueueReader(_SecretsOf(redis_url), "ns", watches.clients) for _ in queues]

    producer = aioredis.Redis.from_url(redis_url)
    try:
        await producer.lpush("share-b", "task")
        depths = [await reader.read(queue) for reader, queue in zip(readers, queues, strict=True)]
        assert [d.backlog for d in depths] == [0, 1]
        watches.watch(("ns", "a"), redis_url, None, Watched("redis-list", ("share-a",)), PoolWake())
        watch = next(iter(watches.servers.values()))
        await watch.check_once()
        assert len(watches.clients.clients) == 1, "one client for the server"
        assert len(watches.clients.users[(redis_url, None)]) == 3, "both readers and the watch hold it"
        shared = watches.clients.clients[(redis_url, None)]
        for reader in readers:
            await reader.close()
        assert watches.clients.clients.get((redis_url, None)) is shared, "the watch still uses it"
        await watch.close()
        assert not watches.clients.clients, "the last user's release closes the client"
    finally:
        await watches.close()
        await producer.delete("share-b")
        await producer.aclose()


async def test_a_shared_client_has_room_for_many_pools_reading_at_once(redis_url: str) -> None:
    from swell_operator.redis_clients import SHARED_CONNECTIONS, RedisClients

    clients = RedisClients()
    shared = clients.get(redis_url, None, "a")
    try:
        # Each BLPOP holds its connection for 1 s: on connect's two connections, eight would take 4 s.
        started = time.monotonic()
        await asyncio.gather(*(shared.blpop([f"wake-test:none-{n}"], timeout=1) for n in range(SHARED_CONNECTIONS)))
        assert time.monotonic() - started < 3.0, "the reads waited for each other's connection"
        assert SHARED_CONNECTIONS >= 8
    finally:
        await clients.close()


async def test_hundreds_of_pools_reading_at_once_through_the_shared_client_all_get_their_depth(redis_url: str) -> None:
    """As at an operator's start with 1000 pools: every read gets an answer, none 'No connection available'."""

    watches = RedisWatches()
    queue = Queue.model_validate(
        {"backend": "redis-list", "redis": {"urlSecretRef": {"name": "r", "key": "url"}}, "list": {"keys": ["many"]}}
    )
    readers = [QueueReader(_SecretsOf(redis_url), "ns", watches.clients) for _ in range(400)]
    try:
        depths = await asyncio.gather(*(reader.read(queue) for reader in readers), return_exceptions=True)
        failed = [d for d in depths if isinstance(d, BaseException)]
        assert not failed, f"{len(failed)} reads failed, e.g. {failed[0]!r}"
        assert len(watches.clients.clients) == 1
    finally:
        await watches.close()


async def test_a_woken_pool_learns_when_the_watch_last_saw_its_queue_empty(redis_url: str) -> None:
    """The watch's previous tick found the queue empty: the pool's first reading dates the arrivals from
    then. A queue that already held work then, or a pool watched only since that tick, gets no such time."""
    watches = RedisWatches()
    wakes = {name: PoolWake() for name in ("fresh", "holding", "late")}
    for name in ("fresh", "holding"):
        watches.watch(("ns", name), redis_url, None, Watched("redis-list", (f"wake-test:{name}",)), wakes[name])
    watch = next(iter(watches.servers.values()))
    producer = aioredis.Redis.from_url(redis_url)
    try:
        await producer.lpush("wake-test:holding", "task")
        before = time.time()
        await watch.check_once()
        after = time.time()
        assert wakes["holding"].take_empty_at() is None, "its queue held work at the first look"
        watches.watch(("ns", "late"), redis_url, None, Watched("redis-list", ("wake-test:late",)), wakes["late"])
        await producer.lpush("wake-test:fresh", "task")
        await producer.lpush("wake-test:late", "task")
        await producer.lpush("wake-test:holding", "more")
        assert await watch.check_once() == 3
        empty_at = wakes["fresh"].take_empty_at()
        assert empty_at is not None and before <= empty_at <= after
        assert wakes["fresh"].take_empty_at() is None, "taken once"
        assert wakes["holding"].take_empty_at() is None, "it was not empty at the tick before"
        assert wakes["late"].take_empty_at() is None, "not watched at the tick before"
        wakes["fresh"].set()  # a wake without a sighting (a spec edit) keeps none
        assert wakes["fresh"].take_empty_at() is None
    finally:
        await watches.close()
        await producer.delete(*(f"wake-test:{name}" for name in wakes))
        await producer.aclose()
