"""A handler that blocks forever, on real Redis: the timeout holds, the task is retried elsewhere, and a
worker whose slots are all held by stuck threads turns not-ready, then not-alive, and still exits on SIGTERM.
"""

from __future__ import annotations

import signal

import redis
from swell_worker.client import SwellClient

from tests.fixtures.workers import StartWorker
from tests.worker.conftest import states, wait_for

BLOCKING = "tests.worker.blocking_handler:BlockForever"


async def test_a_handler_blocking_forever_is_timed_out_retried_and_its_worker_reported_for_restart(
    start_worker: StartWorker, worker_env: dict[str, str], client: SwellClient, redis_url: str
) -> None:
    env = {
        **worker_env,
        "SWELL_HANDLERS": f"echo,{BLOCKING}",
        "SWELL_CONCURRENCY": "2",
        "SWELL_TASK_TIMEOUT_SECONDS": "1",
        "SWELL_MAX_ATTEMPTS": "3",
        "SWELL_DRAIN_SECONDS": "1",
    }
    stuck = start_worker({**env, "SWELL_TEST_BLOCK": "1"})
    ids = [await client.submit("block", {"n": n}) for n in range(2)]

    async def both_timed_out() -> bool:
        found = (await states(client, ids)).values()
        return all(s.state == "queued" and s.error == "timed out after 1s" for s in found)

    await wait_for("both tasks timed out and were given back for a retry", both_timed_out, timeout=30)
    # The event loop is free (it answers), but both slots are held by threads that never return.
    await wait_for("not ready", lambda: stuck.get("/readyz")[0] == 503, timeout=10)
    _, ready = stuck.get_json("/readyz")
    assert any("stuck past the task timeout" in p for p in ready["problems"]), ready
    await wait_for("not alive once stuck past the bound", lambda: stuck.get("/healthz")[0] == 503, timeout=10)
    _, health = stuck.get_json("/healthz")
    assert health["in_flight"] == 2 and "every slot (2)" in health["problems"][0], health
    # The stuck worker takes nothing more: an echo submitted now waits for another worker.
    echo = await client.submit("echo", {"x": 1})
    assert (await client.status(echo)).state == "queued"

    start_worker(env)  # a healthy worker: the retries and the echo run there

    async def all_succeeded() -> bool:
        return all(s.state == "succeeded" for s in (await states(client, [*ids, echo])).values())

    await wait_for("the retries succeed on the healthy worker", all_succeeded, timeout=60)
    raw = redis.Redis.from_url(redis_url).hgetall("swell:effects:block")
    assert {k.decode(): int(v) for k, v in raw.items()} == dict.fromkeys(ids, 1)
    assert all(s.attempt is not None and s.attempt >= 2 for s in (await states(client, ids)).values())

    stuck.signal(signal.SIGTERM)  # its threads are still in time.sleep: it must exit anyway
    assert stuck.wait_exit(30) == 0
