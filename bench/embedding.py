"""Embedding throughput through the queue against the model called directly (the limit).

Same machine, same run, same short documents:
- limit: ``SentenceTransformer.encode`` (fp32, all-MiniLM-L6-v2) at its best batch size.
- onnx-int8 direct: the worker's default embedder called in batches of 64, no queue.
- through the queue: one ``python -m swell_worker`` (Streams, embed handler, concurrency 64) fed one
  text per task, so every batch the model sees was formed by the micro-batcher; once with each embedder.
  Reports documents/s and p50/p95 submit-to-result latency.

    python -m bench.embedding [--docs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
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


def direct(texts: list[str]) -> list[dict[str, Any]]:
    from swell_worker.embedder import OnnxInt8Embedder, SentenceTransformerEmbedder

    rows = []
    fp32 = SentenceTransformerEmbedder()
    fp32.embed(texts[:64])
    best: dict[str, Any] | None = None
    for batch in (16, 32, 64, 128):
        started = time.perf_counter()
        fp32.embed(texts, batch_size=batch)
        rate = len(texts) / (time.perf_counter() - started)
        print(f"  encode batch {batch:>3}: {rate:8.1f} docs/s", flush=True)
        if best is None or rate > best["docs_per_second"]:
            best = {"system": f"SentenceTransformer.encode (fp32, batch {batch})", "docs_per_second": round(rate, 1)}
    assert best is not None
    rows.append(best)
    int8 = OnnxInt8Embedder()
    int8.embed(texts[:64])
    started = time.perf_counter()
    for i in range(0, len(texts), 64):
        int8.embed(texts[i : i + 64])
    rows.append(
        {
            "system": "onnx-int8 embed, batch 64, no queue",
            "docs_per_second": round(len(texts) / (time.perf_counter() - started), 1),
        }
    )
    return rows


async def through_queue(server: RedisServer, texts: list[str], embedder: str) -> dict[str, Any]:
    from swell_worker.client import SwellClient

    worker = WorkerProcess(
        {
            "SWELL_BACKEND": "redis-streams",
            "SWELL_REDIS_URL": server.url,
            "SWELL_QUEUE": "embed",
            "SWELL_HANDLERS": "embed",
            "SWELL_CONCURRENCY": "64",
            "SWELL_EMBEDDER": embedder,
            "SWELL_LOG_LEVEL": "WARNING",
        }
    )
    try:
        worker.wait_ready(120)
        async with SwellClient.for_redis(server.url, "embed", backend="redis-streams") as client:
            started = time.perf_counter()
            submitted = {await client.submit("embed", {"texts": [text]}): time.time() for text in texts}
            counter = server.client()
            while int(counter.get("embed:completed") or 0) < len(submitted):  # cheap to poll, unlike statuses
                await asyncio.sleep(0.05)
            seconds = time.perf_counter() - started
            latencies = {t: ((await client.status(t)).updated_at or 0) - at for t, at in submitted.items()}
        ordered = sorted(latencies.values())
        return {
            "system": f"swell worker, {embedder}, 1 text per task",
            "docs_per_second": round(len(texts) / seconds, 1),
            "p50_latency_s": round(ordered[len(ordered) // 2], 3),
            "p95_latency_s": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        }
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000)
    args = parser.parse_args(argv)
    texts = [d["text"] for d in documents(args.docs)]
    rows = direct(texts)
    for embedder in ("onnx-int8", "sentence-transformers"):
        server = RedisServer()
        server.start()
        try:
            rows.append(asyncio.run(through_queue(server, texts, embedder)))
        finally:
            server.stop()
        print(f"  {rows[-1]}", flush=True)
    limit = rows[0]["docs_per_second"]
    for row in rows:
        row["ratio_to_limit"] = round(row["docs_per_second"] / limit, 3)
        print(
            f"{row['system']:48} {row['docs_per_second']:>8.1f} docs/s  {row['ratio_to_limit']:>6.0%} of the limit"
            + (f"  p50 {row['p50_latency_s']}s p95 {row['p95_latency_s']}s" if "p50_latency_s" in row else "")
        )
    save_comparison(
        "embedding", rows, "docs_per_second", "documents embedded per second (same machine)", docs=args.docs
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
