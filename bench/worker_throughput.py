"""Worker throughput on a no-op task over Redis: Swell's worker against a durable raw loop, Celery and RQ.

Same machine, same run, a fresh redis-server per system, every system timed the same way: the tasks are
queued first (producers outside the clock), then the worker starts; the clock starts when the first
task is taken from the queue and stops when the last one is settled, both seen from Redis (polled
every millisecond), so worker start-up is outside the clock for everyone. For the raw loop and Swell it
also records the CPU per task of the worker process (the raw loop's own) and of redis-server over the
same span: unlike the rates, these hardly move when other work shares the cores.

- raw: a durable redis-py loop, the floor of at-least-once with status on Streams: XREADGROUP COUNT
  <batch>, then one pipeline with a status HSET per task and the XACK.
- swell: one `python -m swell_worker` process, Streams backend, noop handler (declared fast), with
  its status record, result, idempotency check, owner-checked ack and delete per task.
- celery: one worker, prefork pool with 2 processes (the cores here), ignore_result, early ack (its
  default, which is not at-least-once), at the best prefetch multiplier of those tried.
- rq: `rq worker --burst` with SimpleWorker (no fork) and with the default Worker (one fork per job).

    python -m bench.worker_throughput [--tasks 100000] [--celery-tasks 15000] [--rq-tasks 3000] [--rq-fork-tasks 100]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import save_comparison  # noqa: E402
from tests.fixtures.ports import free_port  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402

# Swell's own top-level commands on its hot path (everything else it sends runs inside these scripts).
SWELL_ROUND_TRIP_COMMANDS = ("evalsha", "xreadgroup", "xautoclaim")


def poll_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.001) -> float:
    """The perf_counter at which ``check`` first held, polling every ``interval`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.perf_counter()
        time.sleep(interval)
    raise TimeoutError(what)


def task_bodies(n: int) -> list[bytes]:
    from swell_contract.task import Task

    return [Task(id=f"t{i}", handler="noop").encode() for i in range(n)]


def fill_stream(r: redis.Redis, stream: str, n: int) -> None:
    bodies = task_bodies(n)
    for start in range(0, n, 10_000):
        pipe = r.pipeline(transaction=False)
        for body in bodies[start : start + 10_000]:
            pipe.xadd(stream, {"body": body})
        pipe.execute()


def command_counts(r: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in r.info("commandstats").items()}


def redis_cpu_seconds(r: redis.Redis) -> float:
    """CPU the redis-server process has used so far (user + system), as it reports it."""
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def process_cpu_seconds(pid: int) -> float:
    """CPU a process (not its children) has used so far, from /proc: load-independent, unlike wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raw_loop(server: RedisServer, n: int, batch: int) -> dict[str, Any]:
    r = server.client()
    fill_stream(r, "raw", n)
    r.xgroup_create("raw", "g", id="0")
    r.config_resetstat()
    redis_cpu, client_cpu = redis_cpu_seconds(r), time.process_time()
    started, done = time.perf_counter(), 0
    while done < n:
        answer = r.xreadgroup("g", "c", {"raw": ">"}, count=batch)
        entries = [entry for _, stream_entries in answer for entry in stream_entries]
        pipe = r.pipeline(transaction=False)
        for _, fields in entries:
            task_id = orjson.loads(fields[b"body"])["id"]
            pipe.hset(f"swell:task:{task_id}", mapping={"state": "succeeded", "result": b"{}"})
        pipe.xack("raw", "g", *[entry_id for entry_id, _ in entries])
        pipe.execute()
        done += len(entries)
    seconds = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    redis_cpu = redis_cpu_seconds(r) - redis_cpu
    calls = command_counts(r)
    return {
        "seconds": seconds,
        "worker_cpu_us_per_task": client_cpu / n * 1e6,
        "redis_cpu_us_per_task": redis_cpu / n * 1e6,
        "round_trips_per_task": 2 * calls["xreadgroup"] / n,
        "redis_commands_per_task": sum(calls.values()) / n,
    }


def swell_worker(server: RedisServer, n: int, concurrency: int) -> dict[str, Any]:
    r = server.client()
    fill_stream(r, "swell", n)
    r.config_resetstat()
    port = free_port()
    env = {
        **os.environ,
        "SWELL_BACKEND": "redis-streams",
        "SWELL_REDIS_URL": server.url,
        "SWELL_QUEUE": "swell",
        "SWELL_HANDLERS": "noop",
        "SWELL_CONCURRENCY": str(concurrency),
        "SWELL_HTTP_PORT": str(port),
        "SWELL_HTTP_HOST": "127.0.0.1",
        "SWELL_LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "swell_worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def first_taken() -> bool:
        try:
            groups = r.xinfo_groups("swell")
        except redis.ResponseError:
            return False
        return any(int(g["pending"]) > 0 or int(g.get("entries-read") or 0) > 0 for g in groups)

    try:
        started = poll_until(first_taken, 120, "swell took its first task")
        worker_cpu, redis_cpu = process_cpu_seconds(worker.pid), redis_cpu_seconds(r)
        finished = poll_until(lambda: int(r.get("swell:completed") or 0) >= n, 1200, "swell drained", 0.002)
        worker_cpu = process_cpu_seconds(worker.pid) - worker_cpu
        redis_cpu = redis_cpu_seconds(r) - redis_cpu
        calls = command_counts(r)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200
    finally:
        worker.terminate()
        worker.wait(60)
    assert r.hget("swell:task:t0", "state") == b"succeeded"
    return {
        "seconds": finished - started,
        "worker_cpu_us_per_task": worker_cpu / n * 1e6,
        "redis_cpu_us_per_task": redis_cpu / n * 1e6,
        "round_trips_per_task": sum(calls.get(c, 0) for c in SWELL_ROUND_TRIP_COMMANDS) / n,
        "redis_commands_per_task": sum(calls.values()) / n,
    }


def celery_worker(server: RedisServer, n: int, prefetch: int) -> dict[str, Any]:
    from kombu import Connection

    from bench.noop_jobs import celery_app

    r = server.client()
    with Connection(server.url) as connection, connection.Producer() as producer:
        for _ in range(n):
            celery_app.send_task("noop", producer=producer)
    assert r.llen("celery") == n
    env = {**os.environ, "SWELL_BENCH_REDIS_URL": server.url}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.noop_jobs:celery_app",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            f"--prefetch-multiplier={prefetch}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = poll_until(lambda: r.llen("celery") < n, 120, "celery took its first task")
        finished = poll_until(lambda: r.llen("celery") == 0 and r.hlen("unacked") == 0, 1200, "celery drained", 0.002)
    finally:
        worker.terminate()
        worker.wait(60)
    return {"seconds": finished - started}


def rq_worker(server: RedisServer, n: int, worker_class: str) -> dict[str, Any]:
    from rq import Queue

    r = server.client()
    queue = Queue("bench", connection=r)
    for _ in range(n):
        queue.enqueue("bench.noop_jobs.rq_noop", result_ttl=0)
    worker = subprocess.Popen(
        ["rq", "worker", "--burst", "--url", server.url, "--worker-class", worker_class, "--quiet", "bench"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = poll_until(lambda: r.llen("rq:queue:bench") < n, 120, "rq took its first job")
    finished = poll_until(lambda: worker.poll() is not None, 1200, "rq drained", 0.002)
    assert worker.returncode == 0
    return {"seconds": finished - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks for the raw loop and Swell")
    parser.add_argument("--celery-tasks", type=int, default=15_000)
    parser.add_argument("--rq-tasks", type=int, default=3_000)
    parser.add_argument("--rq-fork-tasks", type=int, default=100, help="the forking RQ worker does a few per second")
    parser.add_argument("--concurrency", type=int, default=128, help="Swell's slots; the raw loop's batch")
    parser.add_argument("--celery-prefetch", type=int, nargs="+", default=[4, 64])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["raw", "swell", "celery", "rq"],
        help="run only these systems, printing without saving (for iterating on one side)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of the raw loop and Swell, taken in turn; each row is their median (one run varies by 20 %%)",
    )
    args = parser.parse_args(argv)
    runs: list[tuple[str, int, Callable[[RedisServer, int], dict[str, Any]]]] = [
        ("raw durable XREADGROUP/HSET/XACK loop", args.tasks, lambda s, n: raw_loop(s, n, args.concurrency)),
        (
            f"swell worker (streams, noop, {args.concurrency} slots)",
            args.tasks,
            lambda s, n: swell_worker(s, n, args.concurrency),
        ),
    ]
    for prefetch in args.celery_prefetch:
        runs.append(
            (
                f"celery (prefork x2, prefetch x{prefetch})",
                args.celery_tasks,
                lambda s, n, p=prefetch: celery_worker(s, n, p),
            )
        )  # type: ignore[misc]
    runs += [
        ("rq SimpleWorker", args.rq_tasks, lambda s, n: rq_worker(s, n, "rq.worker.SimpleWorker")),
        ("rq Worker (fork per job)", args.rq_fork_tasks, lambda s, n: rq_worker(s, n, "rq.worker.Worker")),
    ]
    schedule = runs[:2] * max(args.repeats, 1) + runs[2:]
    if args.only:
        schedule = [run for run in schedule if run[0].split()[0] in args.only]
    measured_by_name: dict[str, list[dict[str, float]]] = {}
    load_before = os.getloadavg()
    for name, n, run in schedule:
        server = RedisServer()
        server.start()
        try:
            measured = run(server, n)
        finally:
            server.stop()
        measured_by_name.setdefault(name, []).append(measured)
        seconds = measured["seconds"]
        cpu = "".join(f" {k.removesuffix('_us_per_task')} {v:.1f} us" for k, v in measured.items() if "cpu" in k)
        print(f"{name:48} {n:>7} tasks {seconds:>8.2f} s {n / seconds:>10.1f} tasks/s{cpu}", flush=True)
    rows: list[dict[str, Any]] = []
    for name, n, _ in runs:
        if name not in measured_by_name:
            continue
        each = measured_by_name[name]
        median = sorted(each, key=lambda m: m["seconds"])[len(each) // 2]
        rows.append(
            {
                "system": name,
                "tasks": n,
                "seconds": round(median["seconds"], 3),
                "tasks_per_second": round(n / median["seconds"], 1),
                **{k: round(v, 3) for k, v in median.items() if k != "seconds"},
                **({"runs_tasks_per_second": [round(n / m["seconds"], 1) for m in each]} if len(each) > 1 else {}),
            }
        )
    if args.only:
        return 0
    raw, swell = rows[0]["tasks_per_second"], rows[1]["tasks_per_second"]
    best_celery = max(r["tasks_per_second"] for r in rows if r["system"].startswith("celery"))
    for row in rows:
        row["ratio_to_raw"] = round(row["tasks_per_second"] / raw, 3)
        row["swell_over_this"] = round(swell / row["tasks_per_second"], 2)
    checks = {
        "swell_over_best_celery_prefork": round(swell / best_celery, 2),
        "swell_over_raw_durable_loop": round(swell / raw, 3),
        "done_when": "swell >= 10x celery prefork and >= 0.5 of the durable raw loop",
        "met": swell >= 10 * best_celery and swell >= 0.5 * raw,
    }
    save_comparison(
        "worker_throughput",
        rows,
        "tasks_per_second",
        "no-op tasks per second (one worker process, same machine, producers outside the clock)",
        arguments=sys.argv[1:] if argv is None else argv,
        checks=checks,
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
    )
    print(
        f"swell = {checks['swell_over_raw_durable_loop']:.0%} of the durable raw loop; "
        f"{checks['swell_over_best_celery_prefork']}x the best celery prefork; done-when met: {checks['met']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
