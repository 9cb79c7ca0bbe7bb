"""The worker process against real Redis, for both Redis backends: delivery, bad input, drain and crash."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest
import redis
from swell_worker.client import SwellClient, TaskFailed, TaskTimeout

from tests.fixtures.workers import StartWorker
from tests.worker.conftest import queue_depth, states, wait_for


def effects(redis_url: str, name: str) -> dict[str, int]:
    raw = redis.Redis.from_url(redis_url).hgetall(f"swell:effects:{name}")
    return {k.decode(): int(v) for k, v in raw.items()}


def dead_letters(redis_url: str, backend_kind: str) -> list[dict[str, str]]:
    """The dead-letter destination's entries as text fields, whatever its type for the backend."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    if backend_kind == "redis-streams":
        return [fields for _, fields in r.xrange("tasks:dead")]
    return [json.loads(item) for item in r.lrange("tasks:dead", 0, -1)]


async def test_every_task_runs_once_and_status_is_kept(
    start_worker: StartWorker, worker_env: dict[str, str], client: SwellClient, redis_url: str
) -> None:
    ids = [await client.submit("echo", {"n": i, "incr": "echo"}) for i in range(60)]
    assert (await client.status(ids[0])).state == "queued"
    start_worker({**worker_env, "SWELL_RESULT_REDIS_URL": redis_url})

    async def all_done() -> bool:
        return all(s.state == "succeeded" for s in (await states(client, ids)).values())

    await wait_for("60 tasks succeeded", all_done)
    assert effects(redis_url, "echo") == dict.fromkeys(ids, 1)
    final = await client.status(ids[7])
    assert final.result == {"echo": {"n": 7, "incr": "echo"}}
    assert final.commits == 1


async def test_call_returns_the_result_or_a_clear_timeout(
    start_worker: StartWorker, worker_env: dict[str, str], client: SwellClient
) -> None:
    with pytest.raises(TaskTimeout, match=r"no reply within 0\.5s"):
        await client.call("echo", {"x": 1}, timeout=0.5)
    start_worker(worker_env)
    assert await client.call("echo", {"x": 2}, timeout=30) == {"echo": {"x": 2}}
    with pytest.raises(TaskFailed, match="boom"):
        await client.call("fail", {"message": "boom", "permanent": True}, timeout=30)


async def test_bad_input_is_dead_lettered_with_its_reason_and_the_worker_goes_on(
    start_worker: StartWorker,
    worker_env: dict[str, str],
    client: SwellClient,
    redis_url: str,
    backend_kind: str,
) -> None:
    worker = start_worker({**worker_env, "SWELL_MAX_PAYLOAD_BYTES": "2000"})
    backend = client._backend
    await backend.publish(b"{not json")
    await backend.publish(json.dumps({"handler": "echo"}).encode())
    unknown = await client.submit("translate", {"text": "hi"})
    oversized = await client.submit("echo", {"blob": "x" * 5000})
    failing = await client.submit("fail", {"message": "model exploded"})

    await wait_for("five dead letters", lambda: len(dead_letters(redis_url, backend_kind)) >= 5)
    reasons = sorted(entry["reason"] for entry in dead_letters(redis_url, backend_kind))
    assert any(r.startswith("malformed task") and "JSON" in r for r in reasons), reasons
    assert any("not a task envelope: id: Field required" in r for r in reasons), reasons
    assert any("unknown handler 'translate'" in r for r in reasons), reasons
    assert any("over SWELL_MAX_PAYLOAD_BYTES (2000)" in r for r in reasons), reasons
    assert any("failed after 3 attempts" in r and "model exploded" in r for r in reasons), reasons
    entry = next(e for e in dead_letters(redis_url, backend_kind) if "model exploded" in e["reason"])
    assert int(entry["attempts"]) == 3 and float(entry["failed_at"]) > 0
    for task_id in (unknown, oversized, failing):
        assert (await client.status(task_id)).state == "failed"

    assert await client.call("echo", {"still": "alive"}, timeout=30) == {"echo": {"still": "alive"}}
    status, body = worker.get("/metrics")
    assert status == 200
    assert "swell_tasks_dead_lettered_total" in body and "swell_tasks_retried_total" in body
    assert worker.process.poll() is None


async def test_never_holds_more_than_its_concurrency(
    start_worker: StartWorker, worker_env: dict[str, str], client: SwellClient, redis_url: str, backend_kind: str
) -> None:
    for _ in range(30):
        await client.submit("sleep", {"seconds": 0.2})
    worker = start_worker({**worker_env, "SWELL_CONCURRENCY": "3"})
    peak = 0
    for _ in range(40):
        depth = await queue_depth(redis_url, backend_kind)
        peak = max(peak, depth.in_flight)
        _, health = worker.get_json("/healthz")
        assert health["in_flight"] <= 3
        await asyncio.sleep(0.05)
    assert 1 <= peak <= 3


async def test_sigterm_finishes_in_flight_work_and_exits_zero(
    start_worker: StartWorker, worker_env: dict[str, str], client: SwellClient, redis_url: str
) -> None:
    ids = [await client.submit("sleep", {"seconds": 1.5, "incr": "drain"}) for _ in range(12)]
    env = {**worker_env, "SWELL_RESULT_REDIS_URL": redis_url, "SWELL_DRAIN_SECONDS": "20"}
    first = start_worker(env)
    await wait_for("4 tasks started", lambda: first.get_json("/healthz")[1]["in_flight"] == 4)
    first.signal(signal.SIGTERM)
    assert first.wait_exit(30) == 0
    done = [i for i, s in (await states(client, ids)).items() if s.state == "succeeded"]
    assert len(done) >= 4, "the tasks in flight at SIGTERM must finish"
    assert "drained: every task in flight finished" in first.log()

    start_worker(env)

    async def all_done() -> bool:
        return all(s.state == "succeeded" for s in (await states(client, ids)).values())

    await wait_for("every task succeeded after the second worker", all_done)
    assert effects(redis_url, "drain") == dict.fromkeys(ids, 1)


async def test_sigterm_gives_back_what_cannot_finish(
    start_worker: StartWorker, worker_env: dict[str, str], client: SwellClient, redis_url: str, backend_kind: str
) -> None:
    ids = [await client.submit("sleep", {"seconds": 4, "incr": "slow"}) for _ in range(2)]
    env = {**worker_env, "SWELL_RESULT_REDIS_URL": redis_url, "SWELL_DRAIN_SECONDS": "0.5"}
    first = start_worker(env)
    await wait_for("2 tasks started", lambda: first.get_json("/healthz")[1]["in_flight"] == 2)
    first.signal(signal.SIGTERM)
    assert first.wait_exit(30) == 0
    assert "giving them back" in first.log()
    depth = await queue_depth(redis_url, backend_kind)
    assert depth.backlog + depth.in_flight >= 2

    start_worker(env)

    async def all_done() -> bool:
        return all(s.state == "succeeded" for s in (await states(client, ids)).values())

    await wait_for("the given-back tasks succeeded", all_done)
    assert effects(redis_url, "slow") == dict.fromkeys(ids, 1)


async def test_sigkill_mid_burst_loses_nothing(
    start_worker: StartWorker, worker_env: dict[str, str], client: SwellClient, redis_url: str
) -> None:
    ids = [await client.submit("sleep", {"seconds": 0.5, "incr": "crash"}) for _ in range(40)]
    env = {**worker_env, "SWELL_RESULT_REDIS_URL": redis_url, "SWELL_CONSUMER_TIMEOUT_SECONDS": "2"}
    victim = start_worker({**env, "SWELL_CONSUMER": "victim"})

    async def some_done() -> bool:
        return sum(s.state == "succeeded" for s in (await states(client, ids)).values()) >= 8

    await wait_for("8 tasks done", some_done)
    victim.signal(signal.SIGKILL)
    assert victim.wait_exit(10) == -signal.SIGKILL
    start_worker({**env, "SWELL_CONSUMER": "rescuer"})

    async def all_done() -> bool:
        return all(s.state == "succeeded" for s in (await states(client, ids)).values())

    await wait_for("every task succeeded after the crash", all_done, timeout=90)
    assert set(effects(redis_url, "crash")) == set(ids)
    assert all(s.commits == 1 for s in (await states(client, ids)).values())


async def test_priority_queue_is_read_first(
    start_worker: StartWorker, worker_env: dict[str, str], redis_url: str, backend_kind: str
) -> None:
    async with SwellClient.for_redis(redis_url, "urgent,tasks", backend=backend_kind) as swell:
        low = [await swell.submit("echo", {"p": "low"}, priority=0) for _ in range(20)]
        high = [await swell.submit("echo", {"p": "high"}, priority=1) for _ in range(20)]
        start_worker({**worker_env, "SWELL_QUEUE": "urgent,tasks", "SWELL_CONCURRENCY": "1"})

        async def all_done() -> bool:
            return all(s.state == "succeeded" for s in (await states(swell, low + high)).values())

        await wait_for("every task succeeded", all_done)
        finished = await states(swell, low + high)
        last_high = max(finished[i].updated_at or 0 for i in high)
        first_low = min(finished[i].updated_at or 0 for i in low)
        assert last_high <= first_low


async def test_unreachable_redis_is_reported_not_fatal(start_worker: StartWorker, backend_kind: str) -> None:
    from tests.fixtures.ports import free_port

    env = {
        "SWELL_BACKEND": backend_kind,
        "SWELL_REDIS_URL": f"redis://:hunter2@127.0.0.1:{free_port()}/0",
        "SWELL_QUEUE": "tasks",
    }
    worker = start_worker(env, ready=False)
    worker.wait_until("/healthz", 200)
    worker.wait_until("/readyz", 503)
    _, body = worker.get_json("/readyz")
    assert any("queue" in p for p in body["problems"]), body
    await asyncio.sleep(1.5)
    assert worker.process.poll() is None
    assert "hunter2" not in worker.log()
    assert "cannot take tasks from the queue" in worker.log()


async def test_invalid_configuration_exits_2_with_the_reason(start_worker: StartWorker) -> None:
    worker = start_worker({"SWELL_BACKEND": "kafka"}, ready=False)
    assert worker.wait_exit(30) == 2
    assert "SWELL_BACKEND" in worker.log()


def swell_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swell_cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_submit_call_and_task(start_worker: StartWorker, worker_env: dict[str, str]) -> None:
    env = {k: v for k, v in worker_env.items() if k in ("SWELL_BACKEND", "SWELL_REDIS_URL", "SWELL_QUEUE")}
    refused = swell_cli("call", "echo", "[1]", env=env)
    assert refused.returncode == 2 and "payload must be a JSON object" in refused.stderr
    submitted = swell_cli("submit", "echo", '{"via": "cli"}', "--id", "cli-1", env=env)
    assert submitted.returncode == 0 and submitted.stdout.strip() == "cli-1"
    queued = json.loads(swell_cli("task", "cli-1", env=env).stdout)
    assert queued["state"] == "queued"
    start_worker(worker_env)
    called = swell_cli("call", "echo", '{"x": 3}', "--timeout", "30", env=env)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"echo": {"x": 3}}
    done = json.loads(swell_cli("task", "cli-1", env=env).stdout)
    assert done["state"] == "succeeded" and done["result"] == {"echo": {"via": "cli"}}
    unknown = swell_cli("task", "never-submitted", env=env)
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["state"] == "unknown"
