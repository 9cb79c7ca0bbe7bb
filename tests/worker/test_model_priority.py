"""Model threads yield the CPU to the event loop: the loop's Redis round trips must not queue behind ONNX.

On a pod with as many model threads as cores, every read, start mark, commit and ack the event loop
makes would otherwise wait for a core behind the model (measured at half load: the loop's socket writes
took 1.7 ms of wall time each). The model threads run at a lower priority (a higher nice value, which
any process may set for its own threads), so the kernel runs the loop first whenever it has work.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from swell_worker.batching import MicroBatcher
from swell_worker.config import WorkerConfig
from swell_worker.embedder import MODEL_NICENESS, load_embedder


def niceness_of(thread_id: int) -> int | None:
    """None once the thread has ended."""
    try:
        stat = Path(f"/proc/self/task/{thread_id}/stat").read_text()
    except FileNotFoundError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[16])


def thread_ids() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/task")}


class Recording:
    """A stand-in model that notes the niceness of the thread each call runs in."""

    model_id, dim, parallel_calls = "recording", 384, 1

    def __init__(self) -> None:
        self.niceness: list[int] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.niceness.append(os.getpriority(os.PRIO_PROCESS, 0))
        return np.zeros((len(texts), 384), dtype=np.float32)


async def test_model_calls_run_below_the_event_loops_priority() -> None:
    model = Recording()
    batcher = MicroBatcher(model)  # type: ignore[arg-type]
    try:
        await asyncio.gather(*(batcher.embed([f"t{i}"]) for i in range(3)))
        await batcher.embed(["again"])
    finally:
        batcher.close()
    loop_niceness = os.getpriority(os.PRIO_PROCESS, 0)
    assert model.niceness and all(n >= loop_niceness + MODEL_NICENESS for n in model.niceness)
    assert os.getpriority(os.PRIO_PROCESS, 0) == loop_niceness  # the calling thread keeps its priority


async def test_a_closed_batcher_refuses_new_work() -> None:
    batcher = MicroBatcher(Recording())  # type: ignore[arg-type]
    batcher.close()
    with pytest.raises(RuntimeError):
        await batcher.embed(["late"])


@pytest.mark.model
def test_the_worker_model_runs_only_in_threads_below_the_loop() -> None:
    """The worker's session runs single-threaded calls in the batcher's threads (lower priority, tested
    above); any pool thread ONNX starts with the session inherits the loading thread's niceness."""
    before = thread_ids()
    loading_thread_niceness = os.getpriority(os.PRIO_PROCESS, 0)
    embedder = load_embedder(
        WorkerConfig(
            backend="redis-streams",
            redis_url="redis://127.0.0.1:1",
            queues=("q",),
            embedder="onnx-int8",
            model_threads=2,
        )
    )
    niceness = [n for n in map(niceness_of, thread_ids() - before) if n is not None]
    assert embedder.embed(["the pool is up"]).shape == (1, 384)
    assert embedder.parallel_calls == 2, "two threads are two single-threaded calls side by side"
    assert all(n >= loading_thread_niceness + MODEL_NICENESS for n in niceness)
    assert os.getpriority(os.PRIO_PROCESS, 0) == loading_thread_niceness
    assert threading.current_thread() is threading.main_thread()
