"""WorkerRuntime against an in-memory queue and in-memory task records: each rule of the runtime, fast.

The real-Redis tests (test_redis_worker.py) show the same rules end to end; these pin down the
runtime's own decisions (gate, batching, retries, dead letters, idempotency, timeout, drain, give-back)
without a process, a port or a server.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
from swell_contract.task import Task
from swell_worker.backends.base import BackendError, Delivery
from swell_worker.config import WorkerConfig
from swell_worker.handlers.base import PermanentTaskError
from swell_worker.results import Success
from swell_worker.runtime import WorkerRuntime

pytestmark = pytest.mark.timeout(30)
ids = itertools.count()


class MemoryQueue:
    """A queue in a deque that records every call the runtime makes."""

    def __init__(self) -> None:
        self.waiting: deque[Delivery] = deque()
        self.asked: list[int] = []
        self.ack_calls: list[list[Delivery]] = []
        self.nacked: list[tuple[Delivery, float]] = []
        self.dead: list[tuple[Delivery, str]] = []
        self.kept_alive: list[list[Delivery]] = []
        self.counts_deliveries = True

    def put(self, body: bytes, attempt: int = 1, *, attempt_known: bool = True) -> Delivery:
        delivery = Delivery(body=body, attempt=attempt, receipt=str(next(ids)), source="q", attempt_known=attempt_known)
        self.waiting.append(delivery)
        return delivery

    @property
    def acked(self) -> list[Delivery]:
        return [d for call in self.ack_calls for d in call]

    async def consume(self, max_messages: int, timeout: float) -> list[Delivery]:
        self.asked.append(max_messages)
        taken = [self.waiting.popleft() for _ in range(min(max_messages, len(self.waiting)))]
        if not taken:
            await asyncio.sleep(0.005)
        return taken

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        self.ack_calls.append(list(deliveries))

    async def nack(self, delivery: Delivery, delay: float) -> None:
        self.nacked.append((delivery, delay))
        if self.counts_deliveries:
            self.put(delivery.body, delivery.attempt + 1)
        else:  # like Pub/Sub without a dead-letter policy: every delivery says attempt 1, unknown
            self.put(delivery.body, attempt_known=False)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.dead.append((delivery, reason))

    async def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        self.kept_alive.append(list(deliveries))

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class MemoryRecords:
    """Task records in dicts, with the number of tasks in each batched call."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.attempts: dict[str, int] = {}
        self.results: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.start_calls: list[int] = []
        self.commit_calls: list[int] = []
        self.resent: list[str] = []
        self.fail_commits = False
        # Seconds each commit takes, as a round trip to a server would.
        self.commit_delay = 0.0

    async def ping(self) -> None:
        return None

    async def start(self, started: Sequence[tuple[Task, int | None]]) -> list[int]:
        self.start_calls.append(len(started))
        answers = []
        for task, attempt in started:
            if self.states.get(task.id) == "succeeded":
                answers.append(0)
                continue
            self.states[task.id] = "started"
            self.attempts[task.id] = self.attempts.get(task.id, 0) + 1 if attempt is None else attempt
            answers.append(self.attempts[task.id])
        return answers

    async def commit(self, successes: Sequence[Success]) -> list[bool]:
        if self.fail_commits:
            raise BackendError("the result store is away")
        self.commit_calls.append(len(successes))
        await asyncio.sleep(self.commit_delay)
        committed = []
        for success in successes:
            fresh = self.states.get(success.task.id) != "succeeded"
            if fresh:
                self.states[success.task.id] = "succeeded"
                self.results[success.task.id] = orjson.loads(success.result_json)
            committed.append(fresh)
        return committed

    async def mark_retrying(self, task: Task, attempt: int, error: str) -> None:
        self.states[task.id], self.errors[task.id] = "queued", error

    async def record_failure(self, task: Task, attempt: int, error: str) -> None:
        self.states[task.id], self.errors[task.id] = "failed", error

    async def resend_reply(self, task: Task) -> None:
        self.resent.append(task.id)


class FunctionHandler:
    """A handler around a coroutine function; ``fast`` as the test declares it."""

    def __init__(self, name: str, run: Callable[[Task], Any], *, fast: bool = False) -> None:
        self.name, self.fast, self._run, self.calls = name, fast, run, 0

    async def startup(self) -> None:
        return None

    async def ready(self) -> bool:
        return True

    async def handle(self, task: Task) -> dict[str, Any]:
        self.calls += 1
        result: dict[str, Any] = await self._run(task)
        return result

    async def shutdown(self) -> None:
        return None


async def nothing(task: Task) -> dict[str, Any]:
    return {"ok": task.id}


def task_body(handler: str, task_id: str | None = None, **payload: Any) -> bytes:
    return Task(id=task_id or f"task-{next(ids)}", handler=handler, payload=payload).encode()


def make_runtime(
    queue: MemoryQueue, records: MemoryRecords, *handlers: Any, push: bool = False, **options: Any
) -> WorkerRuntime:
    settings = {
        "backend": "redis-list",
        "redis_url": "redis://unused",
        "queues": ("q",),
        "retry_base_seconds": 0.01,
        "retry_cap_seconds": 0.02,
        "drain_seconds": 2.0,
        **options,
    }
    config = WorkerConfig(**settings)
    role = {"receiver": queue} if push else {"consumer": queue}
    return WorkerRuntime(config, records, {h.name: h for h in handlers}, **role)


async def until(what: str, check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.002)


async def stopped(runtime: WorkerRuntime, runner: asyncio.Task[None]) -> None:
    runtime.stop()
    await asyncio.wait_for(runner, 10)


async def test_one_read_of_fast_tasks_is_committed_and_acked_with_one_call_each() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    for _ in range(20):
        queue.put(task_body("noop"))
    runtime = make_runtime(queue, records, FunctionHandler("noop", nothing, fast=True), concurrency=40)
    runner = asyncio.create_task(runtime.run())
    await until("20 acked", lambda: len(queue.acked) == 20)
    await stopped(runtime, runner)
    # A read takes up to half the slots, so the next one runs while this one settles.
    assert queue.asked[0] == 20
    # Fast handlers do no I/O: no started mark, the commit is their idempotency check.
    assert records.start_calls == [] and records.commit_calls == [20]
    assert [len(call) for call in queue.ack_calls] == [20]


async def test_reads_take_half_the_slots_so_one_batch_runs_while_the_last_settles() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    for _ in range(50):
        queue.put(task_body("noop"))
    records.commit_delay = 0.05
    runtime = make_runtime(queue, records, FunctionHandler("noop", nothing, fast=True), concurrency=21)
    runner = asyncio.create_task(runtime.run())
    await until("50 acked", lambda: len(queue.acked) == 50)
    await stopped(runtime, runner)
    assert max(queue.asked) == 11
    # The second read was taken while the first batch still held its slots (before its ack).
    assert queue.asked[:2] == [11, 10]
    assert sum(records.commit_calls) == 50
    assert set(records.states.values()) == {"succeeded"}


async def test_one_read_of_other_tasks_is_marked_started_with_one_call() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    for _ in range(20):
        queue.put(task_body("echo"))
    runtime = make_runtime(queue, records, FunctionHandler("echo", nothing), concurrency=40)
    runner = asyncio.create_task(runtime.run())
    await until("20 acked", lambda: len(queue.acked) == 20)
    await stopped(runtime, runner)
    assert records.start_calls == [20] and sum(records.commit_calls) == 20
    assert set(records.states.values()) == {"succeeded"}


async def test_the_gate_asks_for_free_slots_only_and_holds_no_more_than_concurrency() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    release = asyncio.Event()

    async def blocked(task: Task) -> dict[str, Any]:
        await release.wait()
        return {}

    for _ in range(10):
        queue.put(task_body("blocked"))
    runtime = make_runtime(queue, records, FunctionHandler("blocked", blocked), concurrency=3)
    runner = asyncio.create_task(runtime.run())
    await until("3 in flight", lambda: runtime.in_flight == 3)
    await asyncio.sleep(0.05)
    assert runtime.in_flight == 3 and len(queue.waiting) == 7
    assert max(queue.asked) <= 3
    release.set()
    await until("10 acked", lambda: len(queue.acked) == 10)
    await stopped(runtime, runner)
    assert max(queue.asked) <= 3


async def test_a_failing_task_is_retried_with_backoff_then_dead_lettered() -> None:
    queue, records = MemoryQueue(), MemoryRecords()

    async def broken(task: Task) -> dict[str, Any]:
        raise RuntimeError("model exploded")

    queue.put(task_body("broken", "t-broken"))
    runtime = make_runtime(queue, records, FunctionHandler("broken", broken), max_attempts=3)
    runner = asyncio.create_task(runtime.run())
    await until("dead-lettered", lambda: len(queue.dead) == 1)
    await stopped(runtime, runner)
    assert [d.attempt for d, _ in queue.nacked] == [1, 2]
    assert all(0 <= delay <= 0.02 for _, delay in queue.nacked)
    delivery, reason = queue.dead[0]
    assert delivery.attempt == 3 and reason.startswith("failed after 3 attempts: RuntimeError: model exploded")
    assert records.states["t-broken"] == "failed" and queue.acked == []


async def test_what_can_never_run_is_dead_lettered_with_its_reason() -> None:
    queue, records = MemoryQueue(), MemoryRecords()

    async def refuses(task: Task) -> dict[str, Any]:
        raise PermanentTaskError("bad payload")

    queue.put(b"{not json")
    queue.put(task_body("translate"))
    queue.put(task_body("noop", blob="x" * 3000))
    queue.put(task_body("refuses"))
    handlers = (FunctionHandler("noop", nothing, fast=True), FunctionHandler("refuses", refuses))
    runtime = make_runtime(queue, records, *handlers, max_payload_bytes=2000)
    runner = asyncio.create_task(runtime.run())
    await until("four dead letters", lambda: len(queue.dead) == 4)
    await stopped(runtime, runner)
    reasons = sorted(reason for _, reason in queue.dead)
    assert reasons[0].startswith("malformed task: body is not JSON"), reasons
    assert any("unknown handler 'translate'" in r for r in reasons), reasons
    assert any("over SWELL_MAX_PAYLOAD_BYTES (2000)" in r for r in reasons), reasons
    assert any(r == "permanent error: bad payload" for r in reasons), reasons
    assert queue.nacked == [] and runtime.in_flight == 0


async def test_a_task_committed_before_is_acked_without_running_again() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    records.states["t-done"] = "succeeded"
    handler = FunctionHandler("echo", nothing)
    queue.put(task_body("echo", "t-done"))
    queue.put(task_body("echo", "t-new"))
    runtime = make_runtime(queue, records, handler)
    runner = asyncio.create_task(runtime.run())
    await until("both acked", lambda: len(queue.acked) == 2)
    await stopped(runtime, runner)
    assert handler.calls == 1 and records.resent == ["t-done"]
    assert records.commit_calls == [1] and records.results == {"t-new": {"ok": "t-new"}}


async def test_a_fast_task_committed_before_keeps_its_result_and_gets_its_reply_again() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    records.states["t-done"], records.results["t-done"] = "succeeded", {"first": True}
    queue.put(task_body("noop", "t-done"))
    queue.put(task_body("noop", "t-new"))
    runtime = make_runtime(queue, records, FunctionHandler("noop", nothing, fast=True))
    runner = asyncio.create_task(runtime.run())
    await until("both acked", lambda: len(queue.acked) == 2)
    await stopped(runtime, runner)
    assert records.resent == ["t-done"]
    assert records.results == {"t-done": {"first": True}, "t-new": {"ok": "t-new"}}


async def test_a_slow_handler_times_out_and_is_retried() -> None:
    queue, records = MemoryQueue(), MemoryRecords()

    async def slow(task: Task) -> dict[str, Any]:
        await asyncio.sleep(5)
        return {}

    queue.put(task_body("slow", "t-slow"))
    runtime = make_runtime(queue, records, FunctionHandler("slow", slow), task_timeout_seconds=0.05, max_attempts=5)
    runner = asyncio.create_task(runtime.run())
    await until("nacked once", lambda: len(queue.nacked) >= 1)
    await stopped(runtime, runner)
    assert records.errors["t-slow"] == "timed out after 0.05s"


async def test_drain_lets_work_in_flight_finish() -> None:
    queue, records = MemoryQueue(), MemoryRecords()

    async def short(task: Task) -> dict[str, Any]:
        await asyncio.sleep(0.2)
        return {"done": True}

    for _ in range(3):
        queue.put(task_body("short"))
    runtime = make_runtime(queue, records, FunctionHandler("short", short), drain_seconds=5)
    runner = asyncio.create_task(runtime.run())
    await until("3 in flight", lambda: runtime.in_flight == 3)
    await stopped(runtime, runner)
    assert len(queue.acked) == 3 and queue.nacked == []
    assert runtime.in_flight == 0


async def test_drain_gives_back_what_cannot_finish_in_time() -> None:
    queue, records = MemoryQueue(), MemoryRecords()

    async def endless(task: Task) -> dict[str, Any]:
        await asyncio.sleep(60)
        return {}

    held = [queue.put(task_body("endless")) for _ in range(2)]
    runtime = make_runtime(queue, records, FunctionHandler("endless", endless), drain_seconds=0.1)
    runner = asyncio.create_task(runtime.run())
    await until("2 in flight", lambda: runtime.in_flight == 2)
    await stopped(runtime, runner)
    assert sorted(d.receipt for d, _ in queue.nacked) == sorted(d.receipt for d in held)
    assert all(delay == 0 for _, delay in queue.nacked)
    assert queue.acked == [] and runtime.in_flight == 0


async def test_a_failed_commit_acks_nothing() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    records.fail_commits = True
    for _ in range(4):
        queue.put(task_body("noop"))
    runtime = make_runtime(queue, records, FunctionHandler("noop", nothing, fast=True), drain_seconds=0.3)
    runner = asyncio.create_task(runtime.run())
    await until("4 in flight", lambda: runtime.in_flight == 4)
    await asyncio.sleep(0.1)
    assert queue.ack_calls == []
    await stopped(runtime, runner)
    assert queue.ack_calls == [], "an ack never goes before its committed result"
    # Left pending in the queue for redelivery, and out of this worker's books.
    assert queue.nacked == [] and runtime.in_flight == 0


async def test_keep_alive_covers_every_delivery_held_including_those_awaiting_settlement() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    records.fail_commits = True  # the fast ones stay held, waiting for their commit
    release = asyncio.Event()

    async def blocked(task: Task) -> dict[str, Any]:
        await release.wait()
        return {}

    for _ in range(3):
        queue.put(task_body("noop"))
        queue.put(task_body("blocked"))
    handlers = (FunctionHandler("noop", nothing, fast=True), FunctionHandler("blocked", blocked))
    runtime = make_runtime(queue, records, *handlers, consumer_timeout_seconds=0.15, drain_seconds=0.2, concurrency=8)
    runner = asyncio.create_task(runtime.run())
    await until("6 in flight", lambda: runtime.in_flight == 6)
    await until("a keep-alive of all 6", lambda: any(len(call) == 6 for call in queue.kept_alive))
    records.fail_commits = False
    release.set()
    await until("6 acked", lambda: len(queue.acked) == 6)
    await stopped(runtime, runner)


async def test_a_push_is_answered_once_it_is_settled() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    runtime = make_runtime(queue, records, FunctionHandler("noop", nothing, fast=True), push=True, concurrency=1)
    pushed = Delivery(body=task_body("noop", "t-push"), attempt=1, receipt="push", source="sub")
    assert await runtime.admit(pushed) == "done"
    assert [d.receipt for d in queue.acked] == ["push"] and records.states["t-push"] == "succeeded"
    assert runtime.in_flight == 0


class BlockingHandler:
    """A plain-function handler (no coroutine): it blocks its thread until ``release`` is set."""

    fast = False

    def __init__(self, name: str = "blocking") -> None:
        self.name = name
        self.release = threading.Event()
        self.threads: set[str] = set()
        self.running = 0

    async def startup(self) -> None:
        return None

    async def ready(self) -> bool:
        return True

    def handle(self, task: Task) -> dict[str, Any]:
        self.threads.add(threading.current_thread().name)
        self.running += 1
        try:
            # Bounded, so a test that fails before releasing still lets the process end.
            self.release.wait(timeout=20)
            return {"ok": task.id}
        finally:
            self.running -= 1

    async def shutdown(self) -> None:
        return None


async def test_a_blocking_handler_runs_in_a_thread_and_leaves_the_loop_free() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    handler = BlockingHandler()
    queue.put(task_body("blocking", "t-block"))
    runtime = make_runtime(queue, records, handler, task_timeout_seconds=10)
    runner = asyncio.create_task(runtime.run())
    await until("the handler runs", lambda: handler.running == 1)
    before = time.monotonic()
    await asyncio.sleep(0.05)  # would not return before the handler did if it blocked the loop
    assert time.monotonic() - before < 1.0
    assert handler.threads and threading.current_thread().name not in handler.threads
    handler.release.set()
    await until("acked", lambda: len(queue.acked) == 1)
    await stopped(runtime, runner)
    assert records.results == {"t-block": {"ok": "t-block"}}


async def test_a_blocking_handler_past_the_timeout_is_retried_and_its_thread_keeps_the_slot() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    handler = BlockingHandler()
    for n in range(2):
        queue.put(task_body("blocking", f"t-stuck-{n}"))
    runtime = make_runtime(queue, records, handler, concurrency=2, task_timeout_seconds=0.1, max_attempts=5)
    runtime.stuck_limit_seconds = 0.2
    runner = asyncio.create_task(runtime.run())
    await until("both timed out and given back", lambda: len(queue.nacked) == 2)
    assert {records.errors[f"t-stuck-{n}"] for n in range(2)} == {"timed out after 0.1s"}
    # The threads still run: their slots stay taken, so nothing more is read, and the worker says why.
    asked = len(queue.asked)
    await asyncio.sleep(0.1)
    assert len(queue.asked) == asked and len(queue.waiting) == 2
    assert runtime.in_flight == 2 and handler.running == 2
    assert any("stuck past the task timeout" in p for p in await runtime.readiness())
    await until("not alive once stuck past the limit", lambda: bool(runtime.liveness()))
    assert "every slot (2)" in runtime.liveness()[0]
    handler.release.set()  # the threads return: the slots free up and the retries run
    await until("both retries acked", lambda: len(queue.acked) == 2)
    assert runtime.liveness() == [] and "stuck" not in " ".join(await runtime.readiness())
    await stopped(runtime, runner)
    assert set(records.states.values()) == {"succeeded"}


async def test_an_async_handler_is_cancelled_at_the_timeout() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    cancelled = asyncio.Event()

    async def hangs(task: Task) -> dict[str, Any]:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    queue.put(task_body("hangs", "t-hangs"))
    runtime = make_runtime(queue, records, FunctionHandler("hangs", hangs), task_timeout_seconds=0.05, max_attempts=1)
    runner = asyncio.create_task(runtime.run())
    await until("dead-lettered", lambda: len(queue.dead) == 1)
    await stopped(runtime, runner)
    assert cancelled.is_set() and runtime.in_flight == 0
    assert queue.dead[0][1] == "failed after 1 attempts: timed out after 0.05s"


async def test_attempts_are_counted_in_the_record_where_the_queue_does_not_count_them() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    queue.counts_deliveries = False

    async def broken(task: Task) -> dict[str, Any]:
        raise RuntimeError("always")

    queue.put(task_body("broken", "t-uncounted"), attempt_known=False)
    runtime = make_runtime(queue, records, FunctionHandler("broken", broken), max_attempts=3)
    runner = asyncio.create_task(runtime.run())
    await until("dead-lettered", lambda: len(queue.dead) == 1)
    await stopped(runtime, runner)
    assert [d.attempt for d, _ in queue.nacked] == [1, 2]
    assert queue.dead[0][0].attempt == 3 and queue.dead[0][1].startswith("failed after 3 attempts")
    assert records.attempts["t-uncounted"] == 3


async def test_a_push_is_answered_with_its_outcome() -> None:
    queue, records = MemoryQueue(), MemoryRecords()
    release = asyncio.Event()

    async def broken(task: Task) -> dict[str, Any]:
        raise RuntimeError("retry me")

    async def refuses(task: Task) -> dict[str, Any]:
        raise PermanentTaskError("never")

    async def blocked(task: Task) -> dict[str, Any]:
        await release.wait()
        return {}

    handlers = (FunctionHandler("broken", broken), FunctionHandler("refuses", refuses), FunctionHandler("b", blocked))
    runtime = make_runtime(queue, records, *handlers, push=True, concurrency=1, max_attempts=5)

    def pushed(handler: str) -> Delivery:
        return Delivery(body=task_body(handler), attempt=1, receipt="m", source="sub", attempt_known=False)

    assert await runtime.admit(pushed("broken")) == "retry"
    assert await runtime.admit(pushed("refuses")) == "done"
    busy = asyncio.create_task(runtime.admit(pushed("b")))
    await until("the slot is taken", lambda: runtime.in_flight == 1)
    assert await runtime.admit(pushed("broken")) == "refused"
    release.set()
    assert await busy == "done"
