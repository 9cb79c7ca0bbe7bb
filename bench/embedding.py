"""Embedding through the queue against the worker's own embedder called directly (the limit).

Same machine, same run, same short documents, the same int8 ONNX embedder with the same threads:
- limit: ``OnnxInt8Embedder.embed`` called directly at its best batch size (swept), no queue;
- single call: one text, embedded directly (the model's own latency), and one ``call()`` through the queue
  to an idle worker (what a lone request costs end to end);
- saturated: every task queued before the worker starts, one text per task, so every batch the model
  sees was formed by the worker; the rate runs from the first result to the last (start-up and producers
  are outside the clock);
- half load: tasks arrive as a Poisson process at half the saturated rate; p50/p95 from submit to result.

    python -m bench.embedding [--docs 2000] [--half-load-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swell_cli.demo import documents  # noqa: E402

from bench.report import save_comparison  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.fixtures.workers import WorkerProcess  # noqa: E402

BATCHES = (1, 8, 16, 32, 64)
CONCURRENCY = 64


def direct_rate(model: Any, texts: list[str], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        model.embed(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - started)


def direct(texts: list[str]) -> tuple[dict[str, Any], float]:
    """The best direct batch as a row, and the median latency of embedding one text.

    The batch sizes are swept with the worker's settings; at the best one, ONNX's spinning pool threads
    (its default, which the worker turns off) are tried too, and the faster is the limit.
    """
    from swell_worker.embedder import OnnxInt8Embedder, cpu_limit

    model = OnnxInt8Embedder()
    model.embed(texts[:64])
    best: dict[str, Any] | None = None
    best_batch = BATCHES[0]
    for batch in BATCHES:
        rate = direct_rate(model, texts, batch)
        print(f"  direct batch {batch:>3}: {rate:8.1f} docs/s", flush=True)
        if best is None or rate > best["docs_per_second"]:
            best_batch = batch
            best = {
                "system": f"onnx-int8 embed, batch {batch}, no queue ({cpu_limit()} threads)",
                "docs_per_second": round(rate, 1),
            }
    assert best is not None
    spinning = OnnxInt8Embedder(spin=True)
    spinning.embed(texts[:64])
    rate = direct_rate(spinning, texts, best_batch)
    print(f"  direct batch {best_batch:>3}, spinning threads: {rate:8.1f} docs/s", flush=True)
    if rate > best["docs_per_second"]:
        best = {
            "system": f"onnx-int8 embed, batch {best_batch}, no queue ({cpu_limit()} spinning threads)",
            "docs_per_second": round(rate, 1),
        }
    singles = []
    for text in texts[:50]:
        started = time.perf_counter()
        model.embed([text])
        singles.append(time.perf_counter() - started)
    return best, statistics.median(singles)


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


async def half_load(server: RedisServer, texts: list[str], rate: float, seconds: float) -> tuple[dict[str, Any], float]:
    """Open-loop arrivals at ``rate``; also the latency of one call() to the idle worker before them."""
    from swell_worker.client import SwellClient

    worker = worker_for(server)
    rng = random.Random(7)
    try:
        worker.wait_ready(180)
        async with SwellClient.for_redis(server.url, "embed") as client:
            idle = []
            for text in texts[:20]:
                started = time.perf_counter()
                await client.call("embed", {"texts": [text]}, timeout=60)
                idle.append(time.perf_counter() - started)
            submitted: dict[str, float] = {}
            began = time.perf_counter()
            next_at = began
            i = 0
            while next_at - began < seconds:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                task_id = await client.submit("embed", {"texts": [texts[i % len(texts)]]})
                submitted[task_id] = time.time()
                i += 1
                next_at += rng.expovariate(rate)
            counter = server.client()
            while int(counter.get("embed:completed") or 0) < len(submitted) + len(idle):
                await asyncio.sleep(0.1)
            latencies = [((await client.status(t)).updated_at or 0.0) - at for t, at in submitted.items()]
    finally:
        worker.stop()
    row = {
        "system": f"swell worker, half load ({rate:.0f} tasks/s, Poisson)",
        "docs_per_second": round(len(submitted) / seconds, 1),
        "tasks": len(submitted),
        "p50_latency_s": round(quantile(latencies, 0.5), 4),
        "p95_latency_s": round(quantile(latencies, 0.95), 4),
    }
    return row, statistics.median(idle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--half-load-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    texts = [d["text"] for d in documents(args.docs)]
    load_before = os.getloadavg()
    limit_row, single_direct = direct(texts)
    rows = [limit_row]
    for run in (saturated, None):
        server = RedisServer()
        server.start()
        try:
            if run is saturated:
                rows.append(asyncio.run(saturated(server, texts)))
            else:
                half_rate = rows[1]["docs_per_second"] / 2
                row, single_queued = asyncio.run(half_load(server, texts, half_rate, args.half_load_seconds))
                rows.append(row)
        finally:
            server.stop()
        print(f"  {rows[-1]}", flush=True)
    limit = limit_row["docs_per_second"]
    for row in rows:
        row["ratio_to_limit"] = round(row["docs_per_second"] / limit, 3)
    checks = {
        "saturated_over_best_direct_batch": rows[1]["ratio_to_limit"],
        "single_call_direct_s": round(single_direct, 4),
        "single_call_through_queue_s": round(single_queued, 4),
        "half_load_p95_over_single_queued_call": round(rows[2]["p95_latency_s"] / single_queued, 2),
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
