"""The consume loop: take only as many tasks as there are free slots, run them, settle each one.

Backpressure comes from the slot gate: the loop asks the backend for exactly the number of free
slots, so a worker never prefetches work that another pod could be doing, and the queue's backlog
stays an honest signal for the operator. Every delivery is settled once: acked after its result is
committed, given back with exponential backoff and full jitter after a failure, or dead-lettered
with a reason when it can never succeed. On SIGTERM the loop stops taking work, the tasks in flight
get the drain grace period to finish, and what does not finish is given back for another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from swell_worker import metrics
from swell_worker.backends import Backend, BackendError, Delivery, KeepsAlive, Pingable, make_backend
from swell_worker.config import ConfigError, WorkerConfig
from swell_worker.handlers import Handler, PermanentTaskError, Resources, create_handlers
from swell_worker.logs import configure_json_logging
from swell_worker.results import ResultStore
from swell_worker.task import MalformedTask, Task, decode_task

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long one consume call may wait for the first message; bounds how late a stop is noticed.
CONSUME_WAIT_SECONDS = 1.0
# Readiness checks give each dependency this long to answer.
READINESS_TIMEOUT_SECONDS = 2.0
# Settling a delivery that the drain had to interrupt gets this long before it is left to redelivery.
GIVE_BACK_TIMEOUT_SECONDS = 5.0


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

    def take_all_free(self) -> int:
        count = self.free
        self._used += count
        return count

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


class WorkerRuntime:
    def __init__(
        self,
        config: WorkerConfig,
        backend: Backend,
        results: ResultStore,
        handlers: Mapping[str, Handler],
    ) -> None:
        self._config = config
        self._backend = backend
        self._results = results
        self._handlers = dict(handlers)
        self._gate = SlotGate(config.concurrency)
        self._running: dict[asyncio.Task[None], Delivery] = {}
        self._stopping = asyncio.Event()
        self._handlers_started = False
        # Once set (while draining), backend retries stop at this monotonic time.
        self._give_up_at: float | None = None
        metrics.WORKER_CONCURRENCY.set(config.concurrency)
        self._update_gauges()

    @property
    def in_flight(self) -> int:
        return len(self._running)

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
        keep_alive = asyncio.create_task(self._keep_alive_loop())
        try:
            await self._consume_until_stopped()
        finally:
            await self._drain()
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive

    async def admit(self, delivery: Delivery) -> bool:
        """Run a pushed delivery to completion if a slot is free; False at once when full or draining.

        For push backends (Pub/Sub push): the endpoint answers 429 on False, so the sender backs off,
        and otherwise answers after the delivery was settled through the backend.
        """
        if self._stopping.is_set() or not self._gate.try_take():
            metrics.PUSHES_REFUSED.inc()
            return False
        await asyncio.shield(self._spawn(delivery))
        return True

    async def readiness(self) -> list[str]:
        """What stops this worker from taking work now; empty when it is ready."""
        problems = []
        if self._stopping.is_set():
            problems.append("draining: not taking new tasks")
        if not self._handlers_started:
            problems.append("handlers are starting")
        else:
            for name, handler in self._handlers.items():
                try:
                    if not await handler.ready():
                        problems.append(f"handler {name} is not ready")
                except Exception as exc:
                    problems.append(f"handler {name} readiness check failed: {exc}")
        backend_check = self._backend.ping if isinstance(self._backend, Pingable) else self._backend.depth
        for what, check in (("queue", backend_check), ("result store", self._results.ping)):
            try:
                async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
                    await check()
            except TimeoutError:
                problems.append(f"{what}: no answer within {READINESS_TIMEOUT_SECONDS:g}s")
            except Exception as exc:
                problems.append(f"{what}: {exc}")
        return problems

    async def _consume_until_stopped(self) -> None:
        if getattr(self._backend, "receives_by_push", False):
            # Work arrives through admit(); pulling would only hold slots that pushes need.
            await self._stopping.wait()
            return
        failures = 0
        while not self._stopping.is_set():
            if self._gate.free <= 0:
                await self._gate.wait_for_change()
                continue
            wanted = self._gate.take_all_free()
            try:
                deliveries = await self._backend.consume(wanted, CONSUME_WAIT_SECONDS)
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
            for delivery in deliveries:
                self._spawn(delivery)

    def _spawn(self, delivery: Delivery) -> asyncio.Task[None]:
        """Run one delivery in the slot already taken for it; the slot is freed when it is settled."""
        task = asyncio.create_task(self._process(delivery))
        self._running[task] = delivery
        task.add_done_callback(self._finished)
        self._update_gauges()
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._gate.release()
        self._update_gauges()

    def _update_gauges(self) -> None:
        metrics.record_in_flight(self.in_flight, self.concurrency)

    async def _process(self, delivery: Delivery) -> None:
        metrics.TASKS_RECEIVED.inc()
        try:
            await self._settle(delivery)
        except BackendError as exc:
            log.error(
                "could not settle a delivery before the drain deadline; it will be delivered again: %s",
                exc,
                extra={"source": delivery.source, "attempt": delivery.attempt},
            )
        except Exception:
            log.exception(
                "unexpected error settling a delivery; it will be delivered again",
                extra={"source": delivery.source, "attempt": delivery.attempt},
            )

    async def _settle(self, delivery: Delivery) -> None:
        limit = self._config.max_payload_bytes
        if len(delivery.body) > limit:
            reason = f"payload of {len(delivery.body)} bytes is over SWELL_MAX_PAYLOAD_BYTES ({limit})"
            # The body is in memory already; reading its id lets the status and the waiting caller know.
            try:
                oversized: Task | None = decode_task(delivery.body)
            except MalformedTask:
                oversized = None
            await self._dead_letter(delivery, oversized, "oversized", reason)
            return
        try:
            task = decode_task(delivery.body)
        except MalformedTask as exc:
            await self._dead_letter(delivery, None, "malformed", f"malformed task: {exc}")
            return
        handler = self._handlers.get(task.handler)
        if handler is None:
            known = ", ".join(sorted(self._handlers))
            reason = f"unknown handler {task.handler!r}; this worker runs: {known}"
            await self._dead_letter(delivery, task, "unknown_handler", reason)
            return
        if await self._retrying("read the idempotency marker", lambda: self._results.is_done(task.id)):
            log.info("task already committed: acking the repeated delivery", extra=_fields(task, delivery))
            await self._retrying("re-send the reply", lambda: self._results.resend_reply(task))
            await self._retrying("ack", lambda: self._backend.ack(delivery))
            return
        await self._retrying("mark started", lambda: self._results.mark_started(task, delivery.attempt))
        await self._run_handler(handler, task, delivery)

    async def _run_handler(self, handler: Handler, task: Task, delivery: Delivery) -> None:
        started = time.monotonic()
        timeout = self._config.task_timeout_seconds
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                result = await handler.handle(task)
            _check_result(result)
        except PermanentTaskError as exc:
            self._observe(task, started, succeeded=False)
            await self._dead_letter(delivery, task, "permanent_error", f"permanent error: {exc}")
            return
        except TimeoutError as exc:
            error = f"timed out after {timeout:g}s" if deadline.expired() else f"TimeoutError: {exc}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            self._observe(task, started, succeeded=True)
            committed = await self._retrying(
                "commit the result", lambda: self._results.commit_success(task, delivery.attempt, result)
            )
            if not committed:
                log.info("another delivery committed this task first", extra=_fields(task, delivery))
            await self._retrying("ack", lambda: self._backend.ack(delivery))
            return
        self._observe(task, started, succeeded=False)
        await self._failed(delivery, task, error)

    async def _failed(self, delivery: Delivery, task: Task, error: str) -> None:
        if delivery.attempt >= self._config.max_attempts:
            reason = f"failed after {delivery.attempt} attempts: {error}"
            await self._dead_letter(delivery, task, "max_attempts", reason)
            return
        delay = backoff_delay(
            delivery.attempt, self._config.retry_base_seconds, self._config.retry_cap_seconds
        )
        await self._retrying(
            "record the error", lambda: self._results.mark_retrying(task, delivery.attempt, error)
        )
        await self._retrying("give back for retry", lambda: self._backend.nack(delivery, delay))
        metrics.TASKS_RETRIED.inc()
        log.warning("task failed, retrying in %.2fs: %s", delay, error, extra=_fields(task, delivery))

    async def _dead_letter(
        self, delivery: Delivery, task: Task | None, category: metrics.DeadLetterReason, reason: str
    ) -> None:
        """Tell the caller (status and reply) first, then move the message, so nobody waits forever."""
        if task is not None:
            await self._retrying(
                "record the failure", lambda: self._results.record_failure(task, delivery.attempt, reason)
            )
        await self._retrying("dead-letter", lambda: self._backend.dead_letter(delivery, reason))
        metrics.TASKS_DEAD_LETTERED.labels(category).inc()
        fields = _fields(task, delivery) if task else {"source": delivery.source, "attempt": delivery.attempt}
        log.warning("dead-lettered: %s", reason, extra={**fields, "reason_category": category})

    def _observe(self, task: Task, started: float, *, succeeded: bool) -> None:
        metrics.TASK_DURATION.labels(task.handler).observe(time.monotonic() - started)
        (metrics.TASKS_SUCCEEDED if succeeded else metrics.TASKS_FAILED).inc()

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

    async def _keep_alive_loop(self) -> None:
        if not isinstance(self._backend, KeepsAlive):
            return
        interval = self._config.consumer_timeout_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._backend.keep_alive(list(self._running.values()))
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _drain(self) -> None:
        self._stopping.set()
        grace = self._config.drain_seconds
        self._give_up_at = time.monotonic() + grace
        if not self._running:
            return
        log.info("draining %d tasks in flight for up to %gs", self.in_flight, grace)
        _, unfinished = await asyncio.wait(list(self._running), timeout=grace)
        if not unfinished:
            log.info("drained: every task in flight finished")
            return
        held = [self._running[task] for task in unfinished if task in self._running]
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        log.warning("%d tasks did not finish within the drain period; giving them back", len(held))
        for delivery in held:
            try:
                async with asyncio.timeout(GIVE_BACK_TIMEOUT_SECONDS):
                    await self._backend.nack(delivery, 0)
            except Exception as exc:
                log.error("could not give a task back; it will be delivered again later: %s", exc)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()


def _check_result(result: Any) -> None:
    """Results are stored and replied as JSON; anything else is the handler's bug, not worth retrying."""
    if not isinstance(result, dict):
        raise PermanentTaskError(f"handler returned {type(result).__name__}, expected a JSON object")
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise PermanentTaskError(f"handler returned a result that is not JSON: {exc}") from exc


def _fields(task: Task, delivery: Delivery) -> dict[str, Any]:
    """Log fields for a task; never the payload, which may hold user data."""
    return {
        "task_id": task.id,
        "handler": task.handler,
        "attempt": delivery.attempt,
        "source": delivery.source,
    }


async def serve(
    config: WorkerConfig, *, stop: asyncio.Event | None = None, handle_signals: bool = True
) -> int:
    """Run one worker until SIGTERM/SIGINT (or ``stop`` is set); the exit code is 0 after a clean drain."""
    from swell_worker.http import start_http

    log.info("worker starting", extra={"config": repr(config)})
    async with contextlib.AsyncExitStack() as cleanup:
        resources = Resources(config)
        cleanup.push_async_callback(resources.close)
        handlers = create_handlers(config.handlers, config, resources)
        results = ResultStore.from_config(config)
        cleanup.push_async_callback(results.close)
        backend = make_backend(config)
        cleanup.push_async_callback(backend.close)
        runtime = WorkerRuntime(config, backend, results, handlers)
        cleanup.push_async_callback(runtime.stop_handlers)
        http = await start_http(runtime, backend, config.http_host, config.http_port)
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
        log.info(
            "worker ready to consume", extra={"concurrency": config.concurrency, "handlers": list(handlers)}
        )
        await runtime.run()
        log.info("worker stopped")
    return 0


async def _stop_when_set(stop: asyncio.Event, runtime: WorkerRuntime) -> None:
    await stop.wait()
    runtime.stop()


def run_from_env(environ: Mapping[str, str] | None = None) -> int:
    """The worker process's entry point (``python -m swell_worker``, ``swell worker run``)."""
    try:
        config = WorkerConfig.from_env(environ)
    except ConfigError as exc:
        configure_json_logging()
        log.error("invalid worker configuration: %s", exc)
        return 2
    configure_json_logging(config.log_level)
    try:
        return asyncio.run(serve(config))
    except ConfigError as exc:
        log.error("invalid worker configuration: %s", exc)
        return 2
    except Exception:
        log.exception("worker failed")
        return 1
