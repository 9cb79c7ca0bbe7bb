"""The Redis backends against a real redis-server: batched settles, owner checks, repeat-safe takes, no SCAN.

These talk to the backend classes directly (no worker process), so each shows one property of the
queue contract with the Redis commands it costs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis
from swell_contract.task import Task
from swell_operator.depth_sources import RedisListDepth, connect
from swell_redis import open_redis
from swell_worker.backends import redis_list
from swell_worker.backends.redis_list import RedisListConsumer
from swell_worker.backends.redis_streams import RedisStreamsConsumer

Streams = Callable[..., RedisStreamsConsumer]
Lists = Callable[..., RedisListConsumer]


def body(i: int) -> bytes:
    return Task(id=f"t{i}", handler="noop", submitted_at=1_700_000_000.0).encode()


def command_calls(r: redis.Redis, command: str) -> int:
    stats = r.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def publish(consumer: RedisStreamsConsumer | RedisListConsumer, data: bytes) -> None:
    """Enqueue on the consumer's own connection, as a producer would (XADD to a stream, LPUSH to a list)."""
    if isinstance(consumer, RedisStreamsConsumer):
        await consumer._redis.xadd("jobs", {"body": data})
    else:
        await consumer._redis.lpush("jobs", data)


@pytest.fixture
def sync_redis(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
async def streams(redis_url: str) -> AsyncIterator[Streams]:
    made: list[RedisStreamsConsumer] = []

    def make(consumer: str, **options: float) -> RedisStreamsConsumer:
        backend = RedisStreamsConsumer(open_redis(redis_url), ["jobs"], consumer, **options)  # type: ignore[arg-type]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
async def lists(redis_url: str) -> AsyncIterator[Lists]:
    made: list[RedisListConsumer] = []

    def make(consumer: str, queues: tuple[str, ...] = ("jobs",), **options: float) -> RedisListConsumer:
        backend = RedisListConsumer(open_redis(redis_url), queues, consumer, **options)  # type: ignore[arg-type]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


async def test_streams_ack_settles_a_batch_in_one_call(streams: Streams, sync_redis: redis.Redis) -> None:
    worker = streams("w1")
    for i in range(41):
        await publish(worker, body(i))
    await worker.ack(await worker.consume(1, 0.1))  # loads the script, which a first call may have to
    deliveries = await worker.consume(40, 0.1)
    assert len(deliveries) == 40
    sync_redis.config_resetstat()
    await worker.ack(deliveries)
    assert command_calls(sync_redis, "evalsha") == 1
    assert command_calls(sync_redis, "xack") == 1
    assert sync_redis.xlen("jobs") == 0
    assert int(sync_redis.get("jobs:completed") or 0) == 41
    assert sync_redis.xpending("jobs", "swell")["pending"] == 0


async def test_streams_ack_removes_acked_entries_and_keeps_what_is_still_owed(
    streams: Streams, sync_redis: redis.Redis
) -> None:
    """Acks out of order: an older entry still running keeps its place, and so do the waiting ones.

    The first ack (of entries above one still pending) deletes each entry; the next, once nothing below
    is pending, trims the stream below its highest id; the group's lag stays known for the operator.
    """
    worker, other = streams("w1"), streams("w2")
    for i in range(10):
        await publish(worker, body(i))
    [oldest] = await other.consume(1, 0.1)
    batch = await worker.consume(5, 0.1)
    await worker.ack(batch[2:])
    assert sync_redis.xlen("jobs") == 7, "the acked entries are gone, the older pending one stays"
    left = [entry_id.decode() for entry_id, _ in sync_redis.xrange("jobs", count=3)]
    assert left == [oldest.receipt, *[d.receipt for d in batch[:2]]]
    await other.ack([oldest])
    await worker.ack(batch[:2])
    assert sync_redis.xlen("jobs") == 4, "only the waiting entries are left"
    assert sync_redis.xpending("jobs", "swell")["pending"] == 0
    assert int(sync_redis.get("jobs:completed") or 0) == 6
    [group] = sync_redis.xinfo_groups("jobs")
    assert group["lag"] == 4
    rest = await worker.consume(10, 0.1)
    assert [Task.model_validate_json(d.body).id for d in rest] == ["t6", "t7", "t8", "t9"]
    await worker.ack(rest)
    assert sync_redis.xlen("jobs") == 0


async def test_streams_settles_only_what_this_consumer_holds(streams: Streams, sync_redis: redis.Redis) -> None:
    """A claim-over: the loser's ack, nack, dead-letter and keep-alive change nothing; the winner's ack counts."""
    loser, winner = streams("loser"), streams("winner")
    await publish(loser, body(1))
    [delivery] = await loser.consume(1, 0.1)
    stream, entry_id = delivery.source, delivery.receipt
    # The winner takes the entry over, as XAUTOCLAIM would once the loser looked dead.
    assert sync_redis.xclaim(stream, "swell", "winner", 0, [entry_id], justid=True) == [entry_id.encode()]

    await loser.keep_alive([delivery])
    await loser.ack([delivery])
    await loser.nack(delivery, 0)
    await loser.dead_letter(delivery, "the loser thinks it failed")

    [pending] = sync_redis.xpending_range("jobs", "swell", "-", "+", 10)
    assert pending["consumer"] == b"winner" and pending["message_id"] == entry_id.encode()
    assert sync_redis.xlen("jobs") == 1, "no second copy was added"
    assert not sync_redis.exists("jobs:dead") and not sync_redis.exists("jobs:delayed")
    assert sync_redis.get("jobs:completed") is None

    await winner.ack([delivery])
    assert sync_redis.xpending("jobs", "swell")["pending"] == 0
    assert int(sync_redis.get("jobs:completed") or 0) == 1


async def test_streams_keep_alive_refreshes_only_its_own_entries(streams: Streams, sync_redis: redis.Redis) -> None:
    mine, other = streams("mine", consumer_timeout=0.3), streams("other", consumer_timeout=0.3)
    await publish(mine, body(1))
    await publish(mine, body(2))
    [held] = await mine.consume(1, 0.1)
    [theirs] = await other.consume(1, 0.1)
    time.sleep(0.25)
    await mine.keep_alive([held, theirs])
    idle = {p["consumer"]: p["time_since_delivered"] for p in sync_redis.xpending_range("jobs", "swell", "-", "+", 10)}
    assert idle[b"mine"] < 100, idle
    assert idle[b"other"] >= 250, "another consumer's entry is neither claimed nor refreshed"
    assert {p["consumer"] for p in sync_redis.xpending_range("jobs", "swell", "-", "+", 10)} == {b"mine", b"other"}


async def test_streams_recovery_keeps_claiming_while_abandoned_entries_remain(
    streams: Streams, sync_redis: redis.Redis
) -> None:
    dead = streams("dead")
    for i in range(50):
        await publish(dead, body(i))
    assert len(await dead.consume(50, 0.1)) == 50
    time.sleep(0.3)
    rescuer = streams("rescuer", consumer_timeout=0.2)
    taken = [await rescuer.consume(20, 0.1) for _ in range(3)]
    # Each read claims up to its free slots and, while it filled them, looks again on the next read.
    assert [len(batch) for batch in taken] == [20, 20, 10]
    assert all(d.attempt == 2 for batch in taken for d in batch)
    owners = {p["consumer"] for p in sync_redis.xpending_range("jobs", "swell", "-", "+", 100)}
    assert owners == {b"rescuer"}


async def test_list_take_repeated_with_its_token_moves_nothing_more(lists: Lists, sync_redis: redis.Redis) -> None:
    worker = lists("w1")
    for i in range(10):
        await publish(worker, body(i))
    keys = ["jobs:take:w1", "jobs", "jobs:processing:w1", "jobs:attempts", "jobs:consumers"]
    take = sync_redis.register_script(redis_list.TAKE)
    first = take(keys=keys, args=[4, "token-1", "w1", 60_000])
    again = take(keys=keys, args=[4, "token-1", "w1", 60_000])
    assert again == first and len(first) == 12
    assert sync_redis.llen("jobs") == 6 and sync_redis.llen("jobs:processing:w1") == 4
    assert all(int(attempt) == 1 for attempt in first[2::3])
    following = take(keys=keys, args=[4, "token-2", "w1", 60_000])
    assert following != first and sync_redis.llen("jobs") == 2
    assert sync_redis.smembers("jobs:consumers") == {b"w1"}


async def test_list_worker_gives_back_what_sits_in_its_processing_list_unheld(
    lists: Lists, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_list, "RECONCILE_GRACE_SECONDS", 0.2)
    worker = lists("w1")
    for i in range(3):
        await publish(worker, body(i))
    held = await worker.consume(2, 0.1)
    assert len(held) == 2
    # A take whose reply was lost: the task is in the processing list, not in the worker's memory.
    sync_redis.lmove("jobs", "jobs:processing:w1", "RIGHT", "LEFT")
    await worker.keep_alive(held)
    assert sync_redis.llen("jobs:processing:w1") == 3, "within the grace nothing moves"
    time.sleep(0.3)
    await worker.keep_alive(held)
    assert sync_redis.lrange("jobs", 0, -1) == [body(2)]
    assert sorted(sync_redis.lrange("jobs:processing:w1", 0, -1)) == sorted(d.body for d in held)


async def test_list_depth_and_recovery_read_the_registry_not_the_keyspace(
    lists: Lists, sync_redis: redis.Redis, redis_url: str
) -> None:
    pipe = sync_redis.pipeline(transaction=False)
    for i in range(100_000):
        pipe.set(f"swell:task:unrelated-{i}", b"x")
    pipe.execute()
    crashed = lists("crashed", consumer_timeout=0.2)
    for i in range(5):
        await publish(crashed, body(i))
    assert len(await crashed.consume(3, 0.1)) == 3
    operator_view = RedisListDepth(connect(redis_url, None), redis_url, ["jobs"])
    sync_redis.config_resetstat()

    depth = await operator_view.read()
    await operator_view.close()
    assert depth.backlog == 2 and depth.in_flight == 3 and depth.per_consumer == {"crashed": 3}
    time.sleep(0.3)  # the crashed consumer's heartbeat expires
    survivor = lists("survivor", consumer_timeout=5)
    assert len(await survivor.consume(10, 0.1)) == 5
    assert command_calls(sync_redis, "scan") == 0 and command_calls(sync_redis, "keys") == 0
    assert sync_redis.smembers("jobs:consumers") == {b"survivor"}
