"""The real all-MiniLM-L6-v2 from its PyPI packages: the int8 ONNX model agrees with fp32, batching coalesces."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from swell_worker.batching import MicroBatcher
from swell_worker.embedder import OnnxInt8Embedder, SentenceTransformerEmbedder, cpu_limit

pytestmark = pytest.mark.model

SENTENCES = [
    "The cat sat on the mat.",
    "A dog is barking at the mailman.",
    "Stock markets fell sharply on Monday.",
    "The central bank raised interest rates.",
    "How do I reset my password?",
    "I forgot my login credentials.",
    "Kubernetes schedules pods onto nodes.",
    "Redis is an in-memory data store.",
    "Pub/Sub delivers messages.",
    "The recipe calls for two eggs and flour.",
    "Bake the bread at 220 degrees.",
    "The team won the final match.",
    "Rain is expected tomorrow afternoon.",
    "The museum opens at nine.",
    "Quantum computers use qubits.",
    "She plays the violin beautifully.",
    "Our flight was delayed by three hours.",
    "The patient has a mild fever.",
    "Vector databases store embeddings.",
    "Autoscaling adds replicas under load.",
    "The river flooded the valley.",
    "He repaired the bicycle's brakes.",
    "Children were playing in the park.",
    "The contract expires in May.",
    "Please submit the report by Friday.",
    "The telescope observed a distant galaxy.",
    "Coffee keeps me awake.",
    "The library lends e-books.",
    "A storm knocked out the power.",
    "Solar panels convert sunlight to power.",
    "The novel won a literary prize.",
    "Traffic was heavy on the highway.",
    "Mountains are covered in snow.",
    "The startup raised a seed round.",
    "Tea is popular in Britain.",
    "The printer is out of paper.",
    "Elephants have excellent memory.",
    "The election results were announced.",
    "Wash your hands before eating.",
    "The orchestra tuned their instruments.",
    "Bitcoin prices are volatile.",
    "The garden needs watering.",
    "Our servers run on Linux.",
    "A queue holds tasks until workers are free.",
    "The movie was too long.",
    "Swimming is good exercise.",
    "The bridge was closed for repairs.",
    "Python is a programming language.",
    "Il pleut depuis ce matin.",
    "Der Zug hat Verspätung.",
]


@pytest.fixture(scope="module")
def int8() -> OnnxInt8Embedder:
    return OnnxInt8Embedder()


def test_int8_vectors_agree_with_the_fp32_model(int8: OnnxInt8Embedder) -> None:
    fp32 = SentenceTransformerEmbedder()
    a, b = int8.embed(SENTENCES), fp32.embed(SENTENCES)
    assert a.shape == b.shape == (len(SENTENCES), 384)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    cosines = (a * b).sum(axis=1)
    print(f"int8 vs fp32 cosine: min {cosines.min():.4f} mean {cosines.mean():.4f}")
    assert cosines.min() >= 0.98, cosines.min()
    # the two models rank neighbours alike: each sentence's nearest other sentence mostly agrees
    nearest_a = np.argsort(-(a @ a.T), axis=1)[:, 1]
    nearest_b = np.argsort(-(b @ b.T), axis=1)[:, 1]
    assert (nearest_a == nearest_b).mean() >= 0.9


def test_a_paraphrase_is_nearest(int8: OnnxInt8Embedder) -> None:
    vectors = int8.embed(SENTENCES)
    query = int8.embed(["I can't remember the password for my account"])[0]
    best = SENTENCES[int(np.argmax(vectors @ query))]
    assert best in ("How do I reset my password?", "I forgot my login credentials.")


async def test_concurrent_calls_share_one_model_call(int8: OnnxInt8Embedder) -> None:
    batcher = MicroBatcher(int8, max_texts=64)
    results = await asyncio.gather(*(batcher.embed([s]) for s in SENTENCES[:20]))
    assert batcher.model_calls == 1
    direct = int8.embed(SENTENCES[:20])
    for i, got in enumerate(results):
        assert got.shape == (1, 384)
        assert float(got[0] @ direct[i]) > 0.999


async def test_batches_are_bounded(int8: OnnxInt8Embedder) -> None:
    batcher = MicroBatcher(int8, max_texts=8)
    await asyncio.gather(*(batcher.embed([s]) for s in SENTENCES[:24]))
    assert batcher.model_calls == 3


async def test_a_failing_model_call_fails_every_waiter() -> None:
    class Broken:
        model_id, dim, parallel_calls = "broken", 384, 1

        def embed(self, texts: list[str]) -> np.ndarray:
            raise RuntimeError("out of memory")

    batcher = MicroBatcher(Broken())  # type: ignore[arg-type]
    outcomes = await asyncio.gather(*(batcher.embed(["x"]) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) and "out of memory" in str(o) for o in outcomes)


class Slow:
    """A stand-in model whose calls wait for ``release``; each row holds the number its text ends with."""

    model_id, dim = "slow", 384

    def __init__(self, parallel_calls: int) -> None:
        self.parallel_calls = parallel_calls
        self.sizes: list[int] = []
        self.release = threading.Event()

    def embed(self, texts: list[str]) -> np.ndarray:
        self.sizes.append(len(texts))
        self.release.wait(10)
        rows = np.zeros((len(texts), 384), dtype=np.float32)
        rows[:, 0] = [float(text.lstrip("abcdefghijklmnopqrstuvwxyz")) if text[-1].isdigit() else -1 for text in texts]
        return rows


async def calls_started(model: Slow, count: int) -> None:
    for _ in range(500):
        if len(model.sizes) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} model calls expected, {model.sizes} started")


async def test_requests_arriving_while_the_model_runs_form_the_next_batch() -> None:
    model = Slow(parallel_calls=1)
    batcher = MicroBatcher(model, max_texts=64)  # type: ignore[arg-type]
    first = asyncio.create_task(batcher.embed(["alone"]))
    while not model.sizes:  # an idle model takes the first request without waiting for company
        await asyncio.sleep(0.01)
    later = [asyncio.create_task(batcher.embed([f"t{i}"])) for i in range(10)]
    await asyncio.sleep(0.05)
    model.release.set()
    await asyncio.gather(first, *later)
    assert model.sizes == [1, 10]


def test_model_threads_follow_the_pods_cpu_limit(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("50000 100000\n")  # limits.cpu: 500m
    assert cpu_limit(cpu_max) == 1
    cpu_max.write_text("max 100000\n")  # no limit: the CPUs the process may run on
    assert cpu_limit(cpu_max) == cpus
    assert cpu_limit(tmp_path / "absent") == cpus


async def test_a_request_arriving_during_a_call_starts_another_when_the_model_takes_two_at_once() -> None:
    model = Slow(parallel_calls=2)
    batcher = MicroBatcher(model, max_texts=64)  # type: ignore[arg-type]
    first = asyncio.create_task(batcher.embed(["t0"]))
    await calls_started(model, 1)
    second = asyncio.create_task(batcher.embed(["t1"]))
    await calls_started(model, 2)  # not held behind the first call
    third = [asyncio.create_task(batcher.embed([f"t{i}"])) for i in range(2, 6)]
    await asyncio.sleep(0.05)
    assert model.sizes == [1, 1], "a third call started while two ran"
    model.release.set()
    results = await asyncio.gather(first, second, *third)
    assert [int(rows[0, 0]) for rows in results] == list(range(6))
    assert sorted(model.sizes[2:]) in ([4], [2, 2]), model.sizes
    batcher.close()


async def test_texts_waiting_together_are_shared_among_the_calls_that_start() -> None:
    model = Slow(parallel_calls=2)
    model.release.set()
    batcher = MicroBatcher(model, max_texts=64)  # type: ignore[arg-type]
    results = await asyncio.gather(*(batcher.embed([f"t{i}"]) for i in range(10)))
    assert [int(rows[0, 0]) for rows in results] == list(range(10))
    assert model.sizes == [5, 5]
    batcher.close()


async def test_a_large_request_is_split_across_the_calls_and_returned_in_order() -> None:
    model = Slow(parallel_calls=2)
    model.release.set()
    batcher = MicroBatcher(model, max_texts=8)  # type: ignore[arg-type]
    rows = await batcher.embed([f"t{i}" for i in range(40)])
    assert rows.shape == (40, 384)
    assert rows[:, 0].tolist() == list(range(40))
    assert max(model.sizes) <= 8 and sum(model.sizes) == 40
    batcher.close()


async def test_single_threaded_calls_side_by_side_give_the_vectors_of_one_call() -> None:
    side_by_side = OnnxInt8Embedder(2, parallel_calls=0)
    assert side_by_side.parallel_calls == 2
    batcher = MicroBatcher(side_by_side, max_texts=64)
    try:
        together = await asyncio.gather(*(batcher.embed([s]) for s in SENTENCES[:12]))
    finally:
        batcher.close()
    alone = OnnxInt8Embedder(1).embed(SENTENCES[:12])
    assert batcher.model_calls >= 2
    for i, rows in enumerate(together):
        assert float(rows[0] @ alone[i]) > 0.9999


@pytest.mark.parametrize("parallel_calls", [1, 2])
async def test_requests_made_as_earlier_ones_return_are_served(parallel_calls: int) -> None:
    """A caller that embeds again as soon as its vectors arrive must find a runner, not wait forever."""
    model = Slow(parallel_calls)
    model.release.set()
    batcher = MicroBatcher(model, max_texts=64)  # type: ignore[arg-type]
    in_flight = asyncio.Semaphore(4)

    async def one(i: int) -> int:
        async with in_flight:
            rows = await batcher.embed([f"t{i}"])
        return int(rows[0, 0])

    async def one_after_another() -> list[int]:
        return [int((await batcher.embed([f"t{i}"]))[0, 0]) for i in range(5)]

    try:
        assert await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(40))), 10) == list(range(40))
        assert await asyncio.wait_for(one_after_another(), 10) == list(range(5))
    finally:
        batcher.close()
