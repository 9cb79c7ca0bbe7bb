"""Worker throughput on a no-op task over Redis: Swell's worker against the raw limit, RQ and Celery.

Same machine, same run, same redis-server. Each system drains N no-op tasks that are already queued,
timed from the start of draining until the last completion (worker start-up excluded where the worker
can be started first):
- raw: a redis-py loop, XREADGROUP COUNT 100 then one pipelined XACK per batch (the limit for Streams).
- swell: one `python -m swell_worker` process, Streams backend, noop handler, concurrency 64; it also
  writes each task's status, result and idempotency marker (what at-least-once with replies costs).
- rq: one `rq worker` (the default forking Worker: one fork per job), and rq's SimpleWorker (no fork).
- celery: one worker, prefork pool with 2 processes (the cores here), ignore_result.

    python -m bench.worker_throughput [--tasks 20000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import save_comparison  # noqa: E402
from tests.fixtures.ports import free_port  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise TimeoutError(what)


def raw_loop(r: redis.Redis, n: int) -> float:
    r.xgroup_create("raw", "g", id="0", mkstream=True)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd("raw", {"body": f"task-{i}"})
    pipe.execute()
    started, done = time.perf_counter(), 0
    while done < n:
        batch = r.xreadgroup("g", "c", {"raw": ">"}, count=100)
        ids = [entry_id for _, entries in batch for entry_id, _ in entries]
        pipe = r.pipeline(transaction=False)
        pipe.xack("raw", "g", *ids)
        pipe.execute()
        done += len(ids)
    return time.perf_counter() - started


def swell_worker(server: RedisServer, n: int) -> float:
    from swell_worker.task import Task

    port = free_port()
    env = {**os.environ, "SWELL_BACKEND": "redis-streams", "SWELL_REDIS_URL": server.url, "SWELL_QUEUE": "swell",
           "SWELL_HANDLERS": "noop", "SWELL_CONCURRENCY": "64", "SWELL_HTTP_PORT": str(port),
           "SWELL_HTTP_HOST": "127.0.0.1", "SWELL_LOG_LEVEL": "WARNING"}
    worker = subprocess.Popen([sys.executable, "-m", "swell_worker"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    r = server.client()
    try:
        import urllib.request

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_until(ready, 60, "swell worker ready")
        started = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd("swell", {"body": Task(id=f"t{i}", handler="noop").encode()})
        pipe.execute()
        wait_until(lambda: int(r.get("swell:completed") or 0) >= n, 600, "swell drained")
        return time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(30)


def rq_worker(server: RedisServer, n: int, worker_class: str) -> float:
    from rq import Queue

    r = server.client()
    queue = Queue("bench", connection=r)
    for _ in range(n):
        queue.enqueue("bench.noop_jobs.rq_noop", result_ttl=0)
    started = time.perf_counter()
    subprocess.run(["rq", "worker", "--burst", "--url", server.url, "--worker-class", worker_class, "--quiet",
                    "bench"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def celery_worker(server: RedisServer, n: int) -> float:
    env = {**os.environ, "SWELL_BENCH_REDIS_URL": server.url}
    r = server.client()
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.noop_jobs:celery_app", "worker", "--pool=prefork",
         "--concurrency=2", "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(5)  # let the pool start before the clock runs
        from bench.noop_jobs import celery_app

        celery_app.conf.broker_url = server.url
        started = time.perf_counter()
        with celery_app.producer_pool.acquire(block=True) as producer:
            for _ in range(n):
                celery_app.send_task("noop", producer=producer)
        wait_until(lambda: r.llen("celery") == 0 and r.hlen("unacked") == 0, 600, "celery drained")
        return time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rq-tasks", type=int, default=300, help="the forking RQ worker is slow; fewer tasks")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    runs: list[tuple[str, int, Callable[[RedisServer, int], float]]] = [
        ("raw XREADGROUP/XACK loop", args.tasks, lambda s, n: raw_loop(s.client(), n)),
        ("swell worker (streams, noop)", args.tasks, swell_worker),
        ("celery (prefork x2)", args.tasks, celery_worker),
        ("rq SimpleWorker", args.rq_tasks, lambda s, n: rq_worker(s, n, "rq.worker.SimpleWorker")),
        ("rq Worker (fork per job)", args.rq_tasks, lambda s, n: rq_worker(s, n, "rq.worker.Worker")),
    ]
    for name, n, run in runs:
        server = RedisServer()
        server.start()
        try:
            seconds = run(server, n)
        finally:
            server.stop()
        rows.append({"system": name, "tasks": n, "seconds": round(seconds, 3),
                     "tasks_per_second": round(n / seconds, 1)})
        print(f"{name:32} {n:>7} tasks {seconds:>8.2f} s {n / seconds:>10.1f} tasks/s", flush=True)
    raw = rows[0]["tasks_per_second"]
    swell = rows[1]["tasks_per_second"]
    for row in rows:
        row["ratio_to_raw"] = round(row["tasks_per_second"] / raw, 3)
        row["swell_over_this"] = round(swell / row["tasks_per_second"], 2)
    save_comparison("worker_throughput", rows, "tasks_per_second",
                    "no-op tasks per second (one worker process, same machine)")
    print(f"swell = {rows[1]['ratio_to_raw']:.0%} of the raw loop; "
          + "; ".join(f"{r['swell_over_this']}x {r['system']}" for r in rows[2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
