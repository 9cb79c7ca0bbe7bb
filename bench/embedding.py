"""Embedding through the queue against the worker's own embedder called directly (the limit).

Same machine, same run, same short documents, the same int8 ONNX embedder with the same threads:
- limit: ``OnnxInt8Embedder.embed`` called directly at its best batch size (swept), no queue, in both
  layouts of the same threads: all of them in one call at a time, and single-threaded calls side by side
  (the worker's). The sweep's best is timed again ``--repeats`` times, in turns with the saturated
  worker, and the medians are compared: the best of a sweep is a lucky draw on a shared machine, and a
  slow spell should slow both sides;
- single call: one text, embedded directly (the model's own latency; the faster layout's), and one task
  through the queue to an idle worker (what a lone request costs end to end), timed like the tasks at
  half load; the reference is that task with the worker's call swapped for the faster direct one;
- saturated: every task queued before the worker starts, one text per task, so every batch the model
  sees was formed by the worker; the rate runs from the first result to the last (start-up and producers
  are outside the clock);
- half load: tasks arrive as a Poisson process at half the saturated rate (50 % of the worker's measured
  capacity); p50/p95 from just before submit to the result's commit time (the same clock as the single
  task through the queue). The producer shares the cores, so it runs on uvloop like the worker, and the
  CPU each process spends per task is recorded (a measure the machine's other load hardly moves);
- floor: the p95 that model calls taking every waiting text as soon as one is free would reach at the
  same rate, in each layout (one call of all threads, or single-threaded calls side by side), with that
  layout's direct call times (a + c per text, fitted to batches of 1-16) and the queue's own cost (single
  task through the queue minus the direct call); the lower of the two is what batching this model at this
  rate allows before any queue or CPU contention. A second floor stretches the call times by the cores the
  queue's own work takes at half load on this machine (the worker's event loop, Redis and the producer,
  from their measured CPU per task): what the model's calls can reach on the cores that work leaves them.

    python -m bench.embedding [--docs 2000] [--half-load-seconds 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swell_cli.demo import documents  # noqa: E402
from swell_contract import metrics as names  # noqa: E402
from swell_worker.batching import BATCH_SECONDS_SERIES, BATCH_SIZE_SERIES  # noqa: E402
from swell_worker.runtime import run_event_loop  # noqa: E402

from bench.report import save_comparison  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.fixtures.workers import WorkerProcess  # noqa: E402

BATCHES = (1, 8, 16, 32, 64)
CORES = len(os.sched_getaffinity(0))
SMALL_BATCH = 16
CONCURRENCY = 64


def fit_batch_cost(walls: dict[int, float]) -> tuple[float, float]:
    """Least-squares ``a + c * b`` seconds per model call of ``b`` texts."""
    sizes = list(walls)
    mean_b = statistics.fmean(sizes)
    mean_t = statistics.fmean(walls.values())
    c = sum((b - mean_b) * (walls[b] - mean_t) for b in sizes) / sum((b - mean_b) ** 2 for b in sizes)
    return max(mean_t - c * mean_b, 0.0), c


def batching_floor(
    rate: float, a: float, c: float, queue_cost: float, max_texts: int = 64, *, servers: int = 1
) -> float:
    """p95 latency of ``servers`` model calls that, whenever one is free, run every waiting text (up to
    ``max_texts``) in one call.

    Poisson arrivals at ``rate`` (seeded), calls of ``a + c * b`` seconds, plus ``queue_cost`` per task.
    """
    rng = random.Random(11)
    arrivals, at = [], 0.0
    for _ in range(100_000):
        at += rng.expovariate(rate)
        arrivals.append(at)
    latencies: list[float] = []
    free = [0.0] * servers
    i = 0
    while i < len(arrivals):
        server = min(range(servers), key=free.__getitem__)
        start = max(free[server], arrivals[i])
        j = i + 1
        while j < len(arrivals) and arrivals[j] <= start and j - i < max_texts:
            j += 1
        free[server] = start + a + c * (j - i)
        latencies.extend(free[server] - arrivals[k] + queue_cost for k in range(i, j))
        i = j
    return quantile(latencies, 0.95)


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User plus system CPU so far of every thread of a process, or of one of its threads."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def direct_rate(model: Any, texts: list[str], batch: int) -> float:
    """Documents per second through ``model`` at ``batch`` texts per call, as many calls at once as it takes."""
    chunks = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    with ThreadPoolExecutor(max_workers=model.parallel_calls) as calls:
        started = time.perf_counter()
        for _ in calls.map(model.embed, chunks):
            pass
        return len(texts) / (time.perf_counter() - started)


def single_call(model: Any, texts: list[str]) -> float:
    """Median seconds to embed one text when nothing else runs."""
    singles = []
    for text in texts[:50]:
        started = time.perf_counter()
        model.embed([text])
        singles.append(time.perf_counter() - started)
    return statistics.median(singles)


@dataclass
class Limit:
    """The fastest direct layout and batch found by the sweep, to be timed again next to the worker."""

    system: str
    model: Any
    batch: int

    def rate(self, texts: list[str]) -> float:
        return direct_rate(self.model, texts, self.batch)


@dataclass
class Layout:
    """One layout's model calls: how many run at once, and seconds per call by batch size."""

    servers: int
    walls: dict[int, float]


def direct(texts: list[str]) -> tuple[Limit, dict[str, float], dict[str, Layout]]:
    """The best direct batch, the median latency of one text by layout, and each layout's call times.

    Two layouts of the same threads are swept: every thread in one call at a time, and the worker's
    single-threaded calls side by side. At the best batch, ONNX's spinning pool threads (its default,
    which the worker turns off) are tried too; the fastest of all is the limit.
    """
    from swell_worker.embedder import OnnxInt8Embedder, cpu_limit

    models = {
        f"one call at a time, {cpu_limit()} threads each": OnnxInt8Embedder(),
        f"{cpu_limit()} single-threaded calls at once": OnnxInt8Embedder(parallel_calls=0),
    }
    best, best_rate = Limit("", None, BATCHES[0]), 0.0
    layouts: dict[str, Layout] = {}
    for name, model in models.items():
        model.embed(texts[:64])
        layout = layouts[name] = Layout(model.parallel_calls, {})
        for batch in BATCHES:
            rate = direct_rate(model, texts, batch)
            # Calls run side by side, each on its own batch: one call's wall is theirs together over the rate.
            layout.walls[batch] = layout.servers * batch / rate
            print(f"  direct batch {batch:>3}, {name}: {rate:8.1f} docs/s", flush=True)
            if rate > best_rate:
                best, best_rate = Limit(f"onnx-int8 embed, batch {batch}, no queue ({name})", model, batch), rate
    spinning = OnnxInt8Embedder(spin=True)
    spinning.embed(texts[:64])
    rate = direct_rate(spinning, texts, best.batch)
    print(f"  direct batch {best.batch:>3}, spinning threads: {rate:8.1f} docs/s", flush=True)
    if rate > best_rate:
        best = Limit(
            f"onnx-int8 embed, batch {best.batch}, no queue ({cpu_limit()} spinning threads)", spinning, best.batch
        )
    singles = {name: single_call(model, texts) for name, model in models.items()}
    return best, singles, layouts


def worker_for(server: RedisServer) -> WorkerProcess:
    return WorkerProcess(
        {
            "SWELL_BACKEND": "redis-streams",
            "SWELL_REDIS_URL": server.url,
            "SWELL_QUEUE": "embed",
            "SWELL_HANDLERS": "embed",
            "SWELL_CONCURRENCY": str(CONCURRENCY),
            "SWELL_LOG_LEVEL": "WARNING",
        }
    )


# The half-load row's means, from histograms the worker exposes (their sum and count, read before and
# after the run): the handler's time (waiting for and running model calls) and the model calls'.
WORKER_HISTOGRAMS = {
    "mean_handler_s": (names.TASK_DURATION, {"handler": "embed"}),
    "mean_model_call_s": (BATCH_SECONDS_SERIES, {}),
    "mean_texts_per_model_call": (BATCH_SIZE_SERIES, {}),
}


def worker_histograms(worker: WorkerProcess) -> dict[str, tuple[float, float]]:
    """Sum and count of each of WORKER_HISTOGRAMS as the worker's /metrics shows them now."""
    from prometheus_client.parser import text_string_to_metric_families

    _, body = worker.get("/metrics")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    out = {}
    for key, (name, labels) in WORKER_HISTOGRAMS.items():
        series = tuple(sorted(labels.items()))
        out[key] = (samples.get((f"{name}_sum", series), 0.0), samples.get((f"{name}_count", series), 0.0))
    return out


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


async def saturated(server: RedisServer, texts: list[str]) -> dict[str, Any]:
    from swell_worker.client import SwellClient

    async with SwellClient.for_redis(server.url, "embed") as client:
        ids = [await client.submit("embed", {"texts": [text]}) for text in texts]
        worker = worker_for(server)
        try:
            worker.wait_ready(180)
            counter = server.client()
            while int(counter.get("embed:completed") or 0) < len(ids):
                await asyncio.sleep(0.1)
            done = sorted([(await client.status(t)).updated_at or 0.0 for t in ids])
        finally:
            worker.stop()
    return {
        "system": "swell worker, saturated, 1 text per task",
        "docs_per_second": round((len(done) - 1) / (done[-1] - done[0]), 1),
    }


async def single_through_queue(client: Any, text: str) -> float:
    """Submit one task to the idle worker and wait for it: seconds from just before submit to its commit."""
    submitted_at = time.time()
    task_id = await client.submit("embed", {"texts": [text]})
    while (status := await client.status(task_id)).state != "succeeded":
        await asyncio.sleep(0.002)
    return (status.updated_at or 0.0) - submitted_at


async def half_load(server: RedisServer, texts: list[str], rate: float, seconds: float) -> tuple[dict[str, Any], float]:
    """Open-loop arrivals at ``rate``; also the latency of one task through the idle worker before them."""
    from swell_worker.client import SwellClient

    assert server.process is not None
    redis_pid = server.process.pid
    worker = worker_for(server)
    rng = random.Random(7)
    try:
        worker.wait_ready(180)
        async with SwellClient.for_redis(server.url, "embed") as client:
            idle = [await single_through_queue(client, text) for text in texts[:20]]
            counter = server.client()
            completed_before = int(counter.get("embed:completed") or 0)
            submitted: dict[str, float] = {}
            pid = worker.process.pid

            def cpu() -> tuple[float, ...]:
                # The worker's main thread is its event loop (the model runs in threads of its own).
                return cpu_seconds(pid), cpu_seconds(pid, pid), cpu_seconds(redis_pid), time.process_time()

            cpu_before = cpu()
            histograms_before = worker_histograms(worker)
            began = time.perf_counter()
            next_at = began
            i = 0
            while next_at - began < seconds:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                submitted_at = time.time()
                submitted[await client.submit("embed", {"texts": [texts[i % len(texts)]]})] = submitted_at
                i += 1
                next_at += rng.expovariate(rate)
            while int(counter.get("embed:completed") or 0) < completed_before + len(submitted):
                await asyncio.sleep(0.01)
            cpu_after = cpu()
            histograms_after = worker_histograms(worker)
            latencies = [((await client.status(t)).updated_at or 0.0) - at for t, at in submitted.items()]
    finally:
        worker.stop()
    worker_cpu, loop_cpu, redis_cpu, producer_cpu = (
        (b - a) / len(submitted) for a, b in zip(cpu_before, cpu_after, strict=True)
    )
    row = {
        "system": f"swell worker, half load ({rate:.0f} tasks/s, Poisson)",
        "docs_per_second": round(len(submitted) / seconds, 1),
        "tasks": len(submitted),
        "p50_latency_s": round(quantile(latencies, 0.5), 4),
        "p95_latency_s": round(quantile(latencies, 0.95), 4),
        # Where the time goes: the handler's share of the latency.
        "mean_latency_s": round(statistics.fmean(latencies), 4),
        **{
            key: round(
                (histograms_after[key][0] - histograms_before[key][0])
                / max(histograms_after[key][1] - histograms_before[key][1], 1),
                4,
            )
            for key in WORKER_HISTOGRAMS
        },
        "cpu_ms_per_task": {
            "worker": round(worker_cpu * 1000, 2),
            "worker_event_loop": round(loop_cpu * 1000, 2),
            "redis": round(redis_cpu * 1000, 2),
            "producer": round(producer_cpu * 1000, 2),
        },
    }
    return row, statistics.median(idle)


def in_own_redis(run: Any) -> Any:
    """``run(server)`` against a fresh Redis that is stopped afterwards."""
    server = RedisServer()
    server.start()
    try:
        return run_event_loop(run(server))
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--half-load-seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    texts = [d["text"] for d in documents(args.docs)]
    load_before = os.getloadavg()
    limit, singles, layouts = direct(texts)
    # The worker's own layout is the last one swept; the fastest single call is the reference.
    single_direct, worker_single_direct = min(singles.values()), list(singles.values())[-1]
    # The limit (the sweep's best, timed again) and the saturated worker, taken in turns: a slow spell of
    # this shared machine then slows both, and their medians are compared.
    limit_rates: list[float] = []
    saturated_rates: list[float] = []
    for _ in range(args.repeats):
        limit_rates.append(round(limit.rate(texts), 1))
        saturated_rates.append(in_own_redis(lambda server: saturated(server, texts))["docs_per_second"])
        print(f"  limit {limit_rates[-1]} docs/s, saturated {saturated_rates[-1]} docs/s", flush=True)
    rows: list[dict[str, Any]] = [
        {"system": limit.system, "docs_per_second": statistics.median(limit_rates), "repeats": limit_rates},
        {
            "system": "swell worker, saturated, 1 text per task",
            "docs_per_second": statistics.median(saturated_rates),
            "repeats": saturated_rates,
        },
    ]
    half_rate = rows[1]["docs_per_second"] / 2
    row, single_queued = in_own_redis(lambda server: half_load(server, texts, half_rate, args.half_load_seconds))
    rows.append(row)
    print(f"  {row}", flush=True)
    for row in rows:
        row["ratio_to_limit"] = round(row["docs_per_second"] / rows[0]["docs_per_second"], 3)
    # One task through the queue, with the worker's call replaced by the fastest single call there is, so a
    # slower single call in the worker's layout cannot flatter the ratio.
    queue_cost = max(single_queued - worker_single_direct, 0.0)
    single_reference = single_direct + queue_cost
    # The cores the queue's own work takes at half load (the worker's event loop, Redis and the producer,
    # all on this machine), which the model's calls then run without: their times stretch by the share left.
    half = rows[2]
    io_cores = (
        half["docs_per_second"]
        * sum(half["cpu_ms_per_task"][part] for part in ("worker_event_loop", "redis", "producer"))
        / 1000
    )
    stretch = CORES / max(CORES - io_cores, 0.1)
    costs: dict[str, dict[str, float]] = {}
    floors: dict[str, float] = {}
    floors_with_io: dict[str, float] = {}
    for name, layout in layouts.items():
        # The line through the batch sizes that half load forms; the big ones bend it (memory, not overhead).
        a, c = fit_batch_cost({batch: wall for batch, wall in layout.walls.items() if batch <= SMALL_BATCH})
        costs[name] = {"per_call": round(a, 5), "per_text": round(c, 5)}
        floors[name] = batching_floor(half_rate, a, c, queue_cost, servers=layout.servers)
        floors_with_io[name] = batching_floor(half_rate, a * stretch, c * stretch, queue_cost, servers=layout.servers)
    floor = min(floors.values())
    checks = {
        "saturated_over_best_direct_batch": rows[1]["ratio_to_limit"],
        "single_call_direct_s": round(single_direct, 4),
        "single_call_direct_s_by_layout": {name: round(seconds, 4) for name, seconds in singles.items()},
        "single_call_through_queue_s": round(single_queued, 4),
        "single_call_reference_s": round(single_reference, 4),
        "half_load_p95_over_single_queued_call": round(rows[2]["p95_latency_s"] / single_reference, 2),
        "direct_call_cost_s_by_layout": costs,
        "batching_floor_p95_over_single_queued_call_by_layout": {
            name: round(seconds / single_reference, 2) for name, seconds in floors.items()
        },
        "batching_floor_p95_over_single_queued_call": round(floor / single_reference, 2),
        "queue_cpu_cores_at_half_load": round(io_cores, 2),
        "batching_floor_with_queue_cpu_p95_over_single_queued_call": round(
            min(floors_with_io.values()) / single_reference, 2
        ),
        "done_when": "saturated >= 0.85 of the best direct batch; p95 at half load <= 2x a single call",
    }
    checks["met"] = (
        checks["saturated_over_best_direct_batch"] >= 0.85 and checks["half_load_p95_over_single_queued_call"] <= 2
    )
    for row in rows:
        print(f"{row['system']:56} {row['docs_per_second']:>8.1f} docs/s  {row['ratio_to_limit']:>6.0%} of the limit")
    print(checks)
    save_comparison(
        "embedding",
        rows,
        "docs_per_second",
        "documents embedded per second (same machine)",
        docs=args.docs,
        checks=checks,
        arguments=argv if argv is not None else sys.argv[1:],
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
