"""The consume loop: take only as many tasks as there are free slots, run them, settle them in batches.

Backpressure comes from the slot gate: the loop asks the consumer for no more than the free slots
(and at most half of all slots at once, so one read runs while the one before settles), so a worker
never prefetches work that another pod could be doing, and the queue's backlog stays an honest signal
for the operator. What one read brings in is settled in batches: one call marks
the batch started (and says which tasks were committed before, which are only acked), one commits the
results of every task that finished since the last commit, one acks them; the ack always follows the
committed result, and a failed call leaves its deliveries pending for redelivery. Failures are given
back with exponential backoff and full jitter, or dead-lettered with a reason when they can never
succeed. Handlers declared ``fast`` run inline in their batch; others get a task each and a timeout
that holds whatever they do (handlers/execution.py): async handlers are cancelled, blocking ones run in
a thread that keeps its slot until it returns, and a worker whose slots are all held by such stuck
threads reports not-ready, then not-alive, so its probe restarts it. On SIGTERM the loop stops taking
work, the tasks in flight get the drain grace period to finish, and what does not finish is given back
for another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

from prometheus_client import Histogram
from swell_contract.task import MalformedTask, Task, decode_task

from swell_worker import metrics
from swell_worker.backends import (
    BackendError,
    Consumer,
    Delivery,
    PushOutcome,
    PushReceiver,
    make_consumer,
    make_push_receiver,
    receives_by_push,
)
from swell_worker.config import ConfigError, WorkerConfig
from swell_worker.handlers import Handler, PermanentTaskError, Resources, create_handlers
from swell_worker.handlers.execution import HandlerKind, HandlerThreads, kind_of
from swell_worker.logs import configure_json_logging
from swell_worker.results import ResultStore, Success, TaskRecords, encode_result

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long one consume call may wait for the first message; bounds how late a stop is noticed.
CONSUME_WAIT_SECONDS = 1.0
# Readiness checks give each dependency this long to answer.
READINESS_TIMEOUT_SECONDS = 2.0
# Settling a delivery that the drain had to interrupt gets this long before it is left to redelivery.
GIVE_BACK_TIMEOUT_SECONDS = 5.0
# The longest time between two keep-alives (which also reconcile what the queue says this worker holds).
KEEP_ALIVE_MAX_INTERVAL_SECONDS = 5.0


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(0, ceiling)


class SlotGate:
    """Counts the task slots of one worker; consume and push admission both take slots from it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        self._changed = asyncio.Event()

    @property
    def free(self) -> int:
        return self.capacity - self._used

    def take_up_to(self, wanted: int) -> int:
        count = max(min(self.free, wanted), 0)
        self._used += count
        return count

    def hold_one_more(self) -> None:
        """Take a slot even when none is free: a stuck thread keeps the slot its task is about to free."""
        self._used += 1

    def try_take(self) -> bool:
        if self.free <= 0:
            return False
        self._used += 1
        return True

    def release(self, count: int = 1) -> None:
        self._used -= count
        self._changed.set()

    def wake(self) -> None:
        """Wake whoever waits for a slot, e.g. to notice a stop request."""
        self._changed.set()

    async def wait_for_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()


@dataclass(eq=False, slots=True)
class Held:
    """A delivery this worker holds in one of its slots, from its read until it is settled or given back."""

    delivery: Delivery
    received: float = field(default_factory=time.monotonic)
    # Set for a pushed delivery, whose sender waits for its outcome.
    settled: asyncio.Future[PushOutcome] | None = None


@dataclass(frozen=True, slots=True)
class Runnable:
    held: Held
    task: Task
    handler: Handler


class TaskTimedOut(Exception):
    """The task timeout expired before the handler returned."""


class WorkerRuntime:
    """Runs the handlers for work that a Consumer gives (pull) or that arrives through a PushReceiver.

    Exactly one of ``consumer`` and ``receiver`` is given: the configuration decides (see ``serve``).
    """

    def __init__(
        self,
        config: WorkerConfig,
        results: TaskRecords,
        handlers: Mapping[str, Handler],
        *,
        consumer: Consumer | None = None,
        receiver: PushReceiver | None = None,
    ) -> None:
        if (consumer is None) == (receiver is None):
            raise ValueError("WorkerRuntime takes exactly one of consumer (pull) and receiver (push)")
        self._config = config
        self._consumer = consumer
        # Settles deliveries, whichever way they came.
        self._queue: Consumer | PushReceiver = consumer or cast(PushReceiver, receiver)
        self._results = results
        self._handlers = dict(handlers)
        self._kinds: dict[str, HandlerKind] = {name: kind_of(handler) for name, handler in self._handlers.items()}
        self._threads = HandlerThreads(config.concurrency)
        # Calls of blocking handlers that outlived the task timeout, with when: each keeps one slot.
        self._stuck: dict[asyncio.Future[Any], float] = {}
        # How long every slot may be held by stuck threads before the worker reports itself not alive.
        self.stuck_limit_seconds = config.task_timeout_seconds
        self._gate = SlotGate(config.concurrency)
        # One read takes at most half the slots, so the next read is taken and run while the Redis
        # server settles the last one: the worker's CPU and the queue's overlap on separate cores.
        self._read_size = max(1, -(-config.concurrency // 2))
        self._held: set[Held] = set()
        self._emptied = asyncio.Event()
        self._emptied.set()
        # Batches and slow handlers in progress, cancelled when the drain period runs out.
        self._workers: set[asyncio.Task[None]] = set()
        # Deliveries whose outcome awaits the committer: a result to commit, or None to ack only.
        self._to_settle: list[tuple[Held, Success | None]] = []
        self._settle_wanted = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._handlers_started = False
        self._durations: dict[str, Histogram] = {}
        # Once set (while draining), backend retries stop at this monotonic time.
        self._give_up_at: float | None = None
        metrics.WORKER_CONCURRENCY.set(config.concurrency)
        self._update_gauges()

    @property
    def in_flight(self) -> int:
        """Deliveries held, plus handler threads still running after their task timed out."""
        return len(self._held) + len(self._stuck)

    @property
    def concurrency(self) -> int:
        return self._gate.capacity

    @property
    def draining(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop taking work (safe to call from a signal handler); ``run()`` then drains and returns."""
        if not self._stopping.is_set():
            log.info("stop requested: no new tasks; draining %d in flight", self.in_flight)
        self._stopping.set()
        self._gate.wake()

    async def wait_until_stopping(self) -> None:
        await self._stopping.wait()

    async def start_handlers(self) -> None:
        for name, handler in self._handlers.items():
            log.info("starting handler %s", name)
            await handler.startup()
        self._handlers_started = True

    async def stop_handlers(self) -> None:
        for name, handler in self._handlers.items():
            try:
                await handler.shutdown()
            except Exception:
                log.exception("handler %s failed to shut down", name)

    async def run(self) -> None:
        """Consume until ``stop()``, then drain. Returns when every delivery is settled or given back."""
        self._ensure_committer()
        keep_alive = None if self._consumer is None else asyncio.create_task(self._keep_alive_loop(self._consumer))
        try:
            await self._consume_until_stopped()
        finally:
            await self._drain()
            self._threads.close()
            if keep_alive is not None:
                keep_alive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keep_alive

    async def admit(self, delivery: Delivery) -> PushOutcome:
        """Run a pushed delivery to its settlement if a slot is free; "refused" at once when full or draining.

        The push route answers 429 on "refused", so the sender backs off, and otherwise answers with
        the outcome once the delivery was settled through the receiver.
        """
        if self._stopping.is_set() or not self._gate.try_take():
            metrics.PUSHES_REFUSED.inc()
            return "refused"
        self._ensure_committer()
        settled: asyncio.Future[PushOutcome] = asyncio.get_running_loop().create_future()
        entry = Held(delivery, settled=settled)
        self._hold([entry])
        self._start_worker(self._process_batch([entry]))
        return await asyncio.shield(settled)

    def liveness(self) -> list[str]:
        """Why this worker should be restarted; empty while it is alive.

        Every slot held by handler threads that outlived the task timeout, for longer than
        ``stuck_limit_seconds``, is such a reason: only a new process frees those slots.
        """
        if not self._stuck or len(self._stuck) < self.concurrency:
            return []
        all_stuck_for = time.monotonic() - max(self._stuck.values())
        if all_stuck_for <= self.stuck_limit_seconds:
            return []
        return [
            f"every slot ({self.concurrency}) has been held for {all_stuck_for:.0f}s by handler threads "
            "that did not return after the task timeout"
        ]

    async def readiness(self) -> list[str]:
        """What stops this worker from taking work now; empty when it is ready."""
        problems = []
        if self._stopping.is_set():
            problems.append("draining: not taking new tasks")
        if self._stuck and len(self._stuck) >= self.concurrency:
            problems.append(f"every slot ({self.concurrency}) is held by a handler stuck past the task timeout")
        if not self._handlers_started:
            problems.append("handlers are starting")
        else:
            for name, handler in self._handlers.items():
                try:
                    if not await handler.ready():
                        problems.append(f"handler {name} is not ready")
                except Exception as exc:
                    problems.append(f"handler {name} readiness check failed: {exc}")
        for what, check in (("queue", self._queue.ping), ("result store", self._results.ping)):
            try:
                async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
                    await check()
            except TimeoutError:
                problems.append(f"{what}: no answer within {READINESS_TIMEOUT_SECONDS:g}s")
            except Exception as exc:
                problems.append(f"{what}: {exc}")
        return problems

    async def _consume_until_stopped(self) -> None:
        consumer = self._consumer
        if consumer is None:
            # Work arrives through admit().
            await self._stopping.wait()
            return
        failures = 0
        while not self._stopping.is_set():
            if self._gate.free <= 0:
                await self._gate.wait_for_change()
                continue
            wanted = self._gate.take_up_to(self._read_size)
            try:
                deliveries = await consumer.consume(wanted, CONSUME_WAIT_SECONDS)
            except Exception as exc:
                self._gate.release(wanted)
                failures += 1
                delay = min(0.2 * 2**failures, 5.0)
                log.error(
                    "cannot take tasks from the queue, retrying in %.1fs: %s",
                    delay,
                    exc,
                    exc_info=not isinstance(exc, BackendError),
                )
                await self._sleep_unless_stopping(delay)
                continue
            if failures:
                log.info("the queue answers again")
                failures = 0
            if len(deliveries) < wanted:
                self._gate.release(wanted - len(deliveries))
            if deliveries:
                entries = [Held(delivery) for delivery in deliveries]
                self._hold(entries)
                self._start_worker(self._process_batch(entries))

    def _hold(self, entries: Sequence[Held]) -> None:
        """Entries enter the worker's books in slots already taken for them."""
        self._held.update(entries)
        self._emptied.clear()
        metrics.TASKS_RECEIVED.inc(len(entries))
        self._update_gauges()

    def _release(self, entries: Sequence[Held], outcome: PushOutcome = "retry") -> None:
        """Entries leave the books and free their slots: settled ("done"), or given back or left to
        redelivery ("retry")."""
        released = 0
        for entry in entries:
            if entry in self._held:
                self._held.discard(entry)
                released += 1
            if entry.settled is not None and not entry.settled.done():
                entry.settled.set_result(outcome)
        if released:
            self._gate.release(released)
            self._update_gauges()
        if not self._held:
            self._emptied.set()

    def _start_worker(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._workers.add(task)
        task.add_done_callback(self._workers.discard)

    def _update_gauges(self) -> None:
        metrics.record_in_flight(self.in_flight, self.concurrency)

    async def _process_batch(self, entries: Sequence[Held]) -> None:
        """Check, mark started, and run one read's deliveries; successes go to the committer.

        Fast handlers whose attempt the queue counted skip the started mark: they do no I/O, so their
        only effect is the result, whose commit is itself the idempotency check (a task committed
        before is not written again, and its reply is sent again).
        """
        # Entries handed to a slow handler's task or to the committer are theirs to release.
        handed: set[Held] = set()
        try:
            runnable: list[Runnable] = []
            for entry in entries:
                checked = self._parse(entry)
                if isinstance(checked, Runnable):
                    runnable.append(checked)
                else:
                    await self._dead_letter(entry, *checked)
            if not runnable:
                return
            inline: list[Runnable] = []
            to_start: list[Runnable] = []
            kinds = self._kinds
            for item in runnable:
                unmarked = kinds[item.task.handler] == "inline" and item.held.delivery.attempt_known
                (inline if unmarked else to_start).append(item)
            attempts = await self._start(to_start)
            for item, attempt in zip(to_start, attempts, strict=True):
                delivery = item.held.delivery
                if not delivery.attempt_known:
                    item.held.delivery = replace(delivery, attempt=attempt, attempt_known=True)
                if attempt == 0:
                    log.info("task already committed: acking the repeated delivery", extra=_fields(item))
                    await self._resend_reply(item.task)
                    self._settle_later(item.held, None)
                elif kinds[item.task.handler] == "inline":
                    inline.append(item)
                    continue
                else:
                    self._start_worker(self._run_one(item))
                handed.add(item.held)
            await self._run_inline(inline, handed)
            self._settle_wanted.set()
        except BackendError as exc:
            log.error("could not settle deliveries before the drain deadline; they will be delivered again: %s", exc)
            self._release([entry for entry in entries if entry not in handed])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error processing deliveries; they will be delivered again")
            self._release([entry for entry in entries if entry not in handed])

    async def _run_inline(self, inline: Sequence[Runnable], handed: set[Held]) -> None:
        """Fast handlers one after another in this batch; their durations are recorded once per batch."""
        durations: dict[str, list[float]] = {}
        clock = time.monotonic
        try:
            for item in inline:
                task = item.task
                started = clock()
                try:
                    outcome = item.handler.handle(task)
                    result = await outcome if inspect.isawaitable(outcome) else outcome
                    result_json = _encode_result(result)
                except Exception as exc:
                    await self._failed_run(item, started, exc)
                    continue
                durations.setdefault(task.handler, []).append(clock() - started)
                self._to_settle.append((item.held, Success(task, result_json)))
                handed.add(item.held)
        finally:
            for handler, observed in durations.items():
                metrics.observe_many(self._duration(handler), observed)

    async def _start(self, runnable: Sequence[Runnable]) -> list[int]:
        if not runnable:
            return []
        return await self._retrying("mark started", lambda: self._results.start(_started(runnable)))

    async def _resend_reply(self, task: Task) -> None:
        await self._retrying("re-send the reply", lambda: self._results.resend_reply(task))

    def _parse(self, entry: Held) -> Runnable | tuple[Task | None, metrics.DeadLetterReason, str]:
        """The task and its handler, or what to dead-letter a delivery that can never run with, and why."""
        delivery = entry.delivery
        limit = self._config.max_payload_bytes
        if len(delivery.body) > limit:
            reason = f"payload of {len(delivery.body)} bytes is over SWELL_MAX_PAYLOAD_BYTES ({limit})"
            # The body is in memory already; reading its id lets the status and the waiting caller know.
            try:
                oversized: Task | None = decode_task(delivery.body)
            except MalformedTask:
                oversized = None
            return oversized, "oversized", reason
        try:
            task = decode_task(delivery.body)
        except MalformedTask as exc:
            return None, "malformed", f"malformed task: {exc}"
        handler = self._handlers.get(task.handler)
        if handler is None:
            known = ", ".join(sorted(self._handlers))
            return task, "unknown_handler", f"unknown handler {task.handler!r}; this worker runs: {known}"
        return Runnable(entry, task, handler)

    async def _run_one(self, item: Runnable) -> None:
        """A handler that is not fast, in its own task, under the task timeout."""
        try:
            success = await self._run(item)
            if success is not None:
                self._settle_later(item.held, success)
        except BackendError as exc:
            log.error(
                "could not settle a delivery before the drain deadline; it will be delivered again: %s",
                exc,
                extra=_fields(item),
            )
            self._release([item.held])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error settling a delivery; it will be delivered again", extra=_fields(item))
            self._release([item.held])

    async def _run(self, item: Runnable) -> Success | None:
        """Run the handler; a success is returned for the committer, a failure is settled here."""
        task = item.task
        started = time.monotonic()
        try:
            result = await self._call(item)
            result_json = _encode_result(result)
        except Exception as exc:
            await self._failed_run(item, started, exc)
            return None
        self._observe(task, started, succeeded=True)
        return Success(task, result_json)

    async def _failed_run(self, item: Runnable, started: float, exc: Exception) -> None:
        """A handler that raised, timed out or returned what cannot be stored: dead-letter or retry it."""
        task = item.task
        self._observe(task, started, succeeded=False)
        if isinstance(exc, PermanentTaskError):
            await self._dead_letter(item.held, task, "permanent_error", f"permanent error: {exc}")
            return
        error = str(exc) if isinstance(exc, TaskTimedOut) else f"{type(exc).__name__}: {exc}"
        await self._failed(item.held, task, error)

    async def _call(self, item: Runnable) -> Any:
        """The handler's result, called as its kind says; TaskTimedOut once the task timeout expired."""
        handler, task = item.handler, item.task
        kind = self._kinds[task.handler]
        if kind == "inline":
            outcome = handler.handle(task)
            return await outcome if inspect.isawaitable(outcome) else outcome
        timeout = self._config.task_timeout_seconds
        deadline = asyncio.timeout(timeout)
        thread_call: asyncio.Future[Any] | None = None
        try:
            async with deadline:
                if kind == "async":
                    return await cast(Awaitable[Any], handler.handle(task))
                thread_call = self._threads.submit(handler.handle, task)
                return await asyncio.shield(thread_call)
        except TimeoutError:
            if not deadline.expired():
                raise  # the handler's own TimeoutError: an ordinary failure
            if thread_call is not None and not thread_call.done():
                self._keep_slot_while_running(thread_call)
            raise TaskTimedOut(f"timed out after {timeout:g}s") from None

    def _keep_slot_while_running(self, thread_call: asyncio.Future[Any]) -> None:
        """A thread cannot be cancelled: it keeps a slot (taken as its task's is freed) until it returns."""
        self._gate.hold_one_more()
        self._stuck[thread_call] = time.monotonic()
        log.warning(
            "a blocking handler outlived the task timeout; its thread keeps a slot until it returns (%d stuck)",
            len(self._stuck),
        )
        thread_call.add_done_callback(self._thread_returned)

    def _thread_returned(self, thread_call: asyncio.Future[Any]) -> None:
        self._stuck.pop(thread_call, None)
        if not thread_call.cancelled():
            thread_call.exception()  # retrieved: its task was settled long ago
        self._gate.release()
        self._update_gauges()
        log.info("a handler thread that had timed out returned; its slot is free again")

    def _settle_later(self, entry: Held, success: Success | None) -> None:
        self._to_settle.append((entry, success))
        self._settle_wanted.set()

    def _ensure_committer(self) -> None:
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_loop())

    async def _commit_loop(self) -> None:
        """Commit and ack whatever finished since the last round: one call for results, one for acks."""
        while True:
            await self._settle_wanted.wait()
            self._settle_wanted.clear()
            while self._to_settle:
                batch, self._to_settle = self._to_settle, []
                await self._commit_and_ack(batch)

    async def _commit_and_ack(self, batch: Sequence[tuple[Held, Success | None]]) -> None:
        entries = [entry for entry, _ in batch]
        successes = [success for _, success in batch if success is not None]
        outcome: PushOutcome = "retry"
        try:
            if successes:
                committed = await self._retrying("commit the results", lambda: self._results.commit(successes))
                repeated = [success.task for success, fresh in zip(successes, committed, strict=True) if not fresh]
                if repeated:
                    log.info("%d of these tasks were committed before; sending their stored replies", len(repeated))
                    for task in repeated:
                        await self._resend_reply(task)
            await self._retrying("ack", lambda: self._queue.ack([entry.delivery for entry in entries]))
            metrics.TASKS_SUCCEEDED.inc(len(successes))
            outcome = "done"
        except BackendError as exc:
            log.error(
                "could not settle %d deliveries before the drain deadline; they will be delivered again: %s",
                len(entries),
                exc,
            )
        except Exception:
            log.exception("unexpected error settling deliveries; they will be delivered again")
        finally:
            self._release(entries, outcome)

    async def _failed(self, entry: Held, task: Task, error: str) -> None:
        delivery = entry.delivery
        if delivery.attempt >= self._config.max_attempts:
            reason = f"failed after {delivery.attempt} attempts: {error}"
            await self._dead_letter(entry, task, "max_attempts", reason)
            return
        delay = backoff_delay(delivery.attempt, self._config.retry_base_seconds, self._config.retry_cap_seconds)
        await self._retrying("record the error", lambda: self._results.mark_retrying(task, delivery.attempt, error))
        await self._retrying("give back for retry", lambda: self._queue.nack(delivery, delay))
        self._release([entry])
        metrics.TASKS_RETRIED.inc()
        log.warning("task failed, retrying in %.2fs: %s", delay, error, extra=_task_fields(task, delivery))

    async def _dead_letter(
        self, entry: Held, task: Task | None, category: metrics.DeadLetterReason, reason: str
    ) -> None:
        """Tell the caller (status and reply) first, then move the message, so nobody waits forever."""
        delivery = entry.delivery
        if task is not None:
            await self._retrying(
                "record the failure", lambda: self._results.record_failure(task, delivery.attempt, reason)
            )
        await self._retrying("dead-letter", lambda: self._queue.dead_letter(delivery, reason))
        self._release([entry], "done")
        metrics.TASKS_DEAD_LETTERED.labels(category).inc()
        fields = _task_fields(task, delivery) if task else {"source": delivery.source, "attempt": delivery.attempt}
        log.warning("dead-lettered: %s", reason, extra={**fields, "reason_category": category})

    def _observe(self, task: Task, started: float, *, succeeded: bool) -> None:
        self._duration(task.handler).observe(time.monotonic() - started)
        if not succeeded:
            metrics.TASKS_FAILED.inc()

    def _duration(self, handler: str) -> Histogram:
        duration = self._durations.get(handler)
        if duration is None:
            duration = self._durations[handler] = metrics.TASK_DURATION.labels(handler)
        return duration

    async def _retrying(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Retry a queue or store operation while it is unreachable; give up only past the drain deadline.

        Holding the slot meanwhile is deliberate: with Redis away the worker can do nothing useful.
        """
        delay = 0.1
        while True:
            try:
                return await operation()
            except BackendError as exc:
                if self._give_up_at is not None and time.monotonic() + delay >= self._give_up_at:
                    raise
                log.warning("could not %s, retrying in %.1fs: %s", what, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _keep_alive_loop(self, consumer: Consumer) -> None:
        interval = min(self._config.consumer_timeout_seconds / 3, KEEP_ALIVE_MAX_INTERVAL_SECONDS)
        while True:
            await asyncio.sleep(interval)
            try:
                await consumer.keep_alive([entry.delivery for entry in self._held])
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _drain(self) -> None:
        self._stopping.set()
        grace = self._config.drain_seconds
        self._give_up_at = time.monotonic() + grace
        try:
            if not self._held:
                return
            log.info("draining %d tasks in flight for up to %gs", self.in_flight, grace)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._emptied.wait()
            if not self._held:
                log.info("drained: every task in flight finished")
                return
            unfinished = list(self._workers)
            if self._committer is not None:
                unfinished.append(self._committer)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            held = list(self._held)
            log.warning("%d tasks did not finish within the drain period; giving them back", len(held))
            for entry in held:
                try:
                    async with asyncio.timeout(GIVE_BACK_TIMEOUT_SECONDS):
                        await self._queue.nack(entry.delivery, 0)
                except Exception as exc:
                    log.error("could not give a task back; it will be delivered again later: %s", exc)
            self._release(held)
        finally:
            if self._committer is not None:
                self._committer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._committer

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()


def _encode_result(result: Any) -> bytes:
    """Results are stored and replied as JSON; anything else is the handler's bug, not worth retrying."""
    if not isinstance(result, dict):
        raise PermanentTaskError(f"handler returned {type(result).__name__}, expected a JSON object")
    try:
        return encode_result(result)
    except TypeError as exc:
        raise PermanentTaskError(f"handler returned a result that is not JSON: {exc}") from exc


def _started(runnable: Sequence[Runnable]) -> list[tuple[Task, int | None]]:
    """What to mark started: each task with its attempt, or None where the queue did not count it."""
    return [(r.task, r.held.delivery.attempt if r.held.delivery.attempt_known else None) for r in runnable]


def _fields(item: Runnable) -> dict[str, Any]:
    return _task_fields(item.task, item.held.delivery)


def _task_fields(task: Task, delivery: Delivery) -> dict[str, Any]:
    """Log fields for a task; never the payload, which may hold user data."""
    return {
        "task_id": task.id,
        "handler": task.handler,
        "attempt": delivery.attempt,
        "source": delivery.source,
    }


async def serve(config: WorkerConfig, *, stop: asyncio.Event | None = None, handle_signals: bool = True) -> int:
    """Run one worker until SIGTERM/SIGINT (or ``stop`` is set); the exit code is 0 after a clean drain."""
    from swell_worker.http import start_http

    log.info("worker starting", extra={"config": repr(config)})
    async with contextlib.AsyncExitStack() as cleanup:
        resources = Resources(config)
        cleanup.push_async_callback(resources.close)
        handlers = create_handlers(config.handlers, config, resources)
        results = ResultStore.from_config(config)
        cleanup.push_async_callback(results.close)
        receiver: PushReceiver | None = None
        consumer: Consumer | None = None
        if receives_by_push(config):
            receiver = make_push_receiver(config)
            cleanup.push_async_callback(receiver.close)
        else:
            consumer = make_consumer(config)
            cleanup.push_async_callback(consumer.close)
        runtime = WorkerRuntime(config, results, handlers, consumer=consumer, receiver=receiver)
        cleanup.push_async_callback(runtime.stop_handlers)
        http = await start_http(runtime, receiver, config.http_host, config.http_port)
        cleanup.push_async_callback(http.cleanup)
        if handle_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, runtime.stop)
                cleanup.callback(loop.remove_signal_handler, signum)
        if stop is not None:
            watcher = asyncio.create_task(_stop_when_set(stop, runtime))
            cleanup.callback(watcher.cancel)
        startup = asyncio.create_task(runtime.start_handlers())
        stopped_early = asyncio.create_task(runtime.wait_until_stopping())
        await asyncio.wait({startup, stopped_early}, return_when=asyncio.FIRST_COMPLETED)
        stopped_early.cancel()
        if not startup.done():
            startup.cancel()
            log.info("stopped while the handlers were starting")
            return 0
        startup.result()  # a handler that cannot start fails the worker, with its error in the log
        log.info("worker ready to consume", extra={"concurrency": config.concurrency, "handlers": list(handlers)})
        await runtime.run()
        log.info("worker stopped")
    return 0


async def _stop_when_set(stop: asyncio.Event, runtime: WorkerRuntime) -> None:
    await stop.wait()
    runtime.stop()


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it is installed (a faster loop for many small Redis replies), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _exit_while_starting(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run_from_env(environ: Mapping[str, str] | None = None) -> int:
    """The worker process's entry point (``python -m swell_worker``, ``swell worker run``).

    SIGTERM exits at once until ``serve`` takes it over to drain: as a container's PID 1 the process would
    otherwise ignore it while importing handlers, and take tasks until the grace period's SIGKILL.
    """
    signal.signal(signal.SIGTERM, _exit_while_starting)
    try:
        config = WorkerConfig.from_env(environ)
    except ConfigError as exc:
        configure_json_logging()
        log.error("invalid worker configuration: %s", exc)
        return 2
    configure_json_logging(config.log_level)
    try:
        return run_event_loop(serve(config))
    except ConfigError as exc:
        log.error("invalid worker configuration: %s", exc)
        return 2
    except Exception:
        log.exception("worker failed")
        return 1
