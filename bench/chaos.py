"""The chaos suite: real workers and a real Redis, broken on purpose, and what became of every task.

Workers are `python -m swell_worker` processes (``tests.fixtures.workers``), Redis is a redis-server of the
run's own on loopback with AOF (``tests.fixtures.redis_server``). Each scenario pushes a burst of ``sleep``
tasks that record their effect (``swell:effects:chaos``, one count per run of a task), breaks something,
waits for the burst to settle and reports:
- sent, done (succeeded), dead_lettered (failed), lost (neither, at the end), duplicated (tasks whose
  effect ran more than once: at-least-once delivery allows it after a crash, and it is counted);
- recovery_seconds: from the end of the disruption (the last kill, Redis back, the drops over) to every
  task settled.

The full run (``python -m bench.chaos``) writes bench/results/chaos.json; ``tests/chaos`` runs the same
scenarios with small counts and one round in the normal test suite.

    python -m bench.chaos [--short] [--scenarios worker_kills redis_restart ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from swell_contract.keys import QueueKeys, status_key

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.fixtures.workers import WorkerProcess  # noqa: E402
from tests.operator.kube import push_tasks  # noqa: E402
from tests.worker.test_connection_drops import drop_connections  # noqa: E402
from tests.worker.test_redis_worker import dead_letters  # noqa: E402

RESULTS = ROOT / "bench" / "results"
QUEUE = "tasks"  # the queue the shared dead-letter reader knows
EFFECT = "chaos"
BACKENDS = ("redis-streams", "redis-list")
CONSUMER_TIMEOUT_SECONDS = 8.0


@dataclass
class Outcome:
    scenario: str
    backend: str
    sent: int
    done: int
    dead_lettered: int
    lost: int
    duplicated: int
    recovery_seconds: float | None
    details: dict[str, Any] = field(default_factory=dict)


def worker_env(redis: RedisServer, backend: str, **extra: str) -> dict[str, str]:
    return {
        "SWELL_BACKEND": backend,
        "SWELL_REDIS_URL": redis.url,
        "SWELL_RESULT_REDIS_URL": redis.url,
        "SWELL_QUEUE": QUEUE,
        "SWELL_HANDLERS": "noop,sleep,echo,fail",
        "SWELL_CONCURRENCY": "8",
        "SWELL_CONSUMER_TIMEOUT_SECONDS": str(CONSUMER_TIMEOUT_SECONDS),
        "SWELL_RETRY_BASE_SECONDS": "0.05",
        "SWELL_RETRY_CAP_SECONDS": "0.5",
        "SWELL_MAX_ATTEMPTS": "20",  # crashes count as attempts; none of this burst should reach the DLQ
        "SWELL_LOG_LEVEL": "WARNING",
        **extra,
    }


class Crew:
    """Worker processes as a Deployment would keep them: a killed one is replaced by a new consumer."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.live: list[WorkerProcess] = []
        self.dead: list[WorkerProcess] = []
        self.names: dict[WorkerProcess, str] = {}

    def start(self, count: int = 1, ready: bool = True) -> None:
        for _ in range(count):
            name = f"w-{uuid.uuid4().hex[:8]}"
            worker = WorkerProcess({**self.env, "SWELL_CONSUMER": name})
            self.names[worker] = name
            self.live.append(worker.wait_ready() if ready else worker)

    def kill_one(self, before_replacing: Callable[[str], None] = lambda name: None) -> None:
        """SIGKILL a random live worker; ``before_replacing`` gets its consumer name once it is dead."""
        victim = self.live.pop(random.randrange(len(self.live)))
        victim.signal(signal.SIGKILL)
        victim.wait_exit(10)
        self.dead.append(victim)
        before_replacing(self.names[victim])
        self.start(1, ready=False)

    def ready_count(self) -> tuple[int, int]:
        """How many live workers answer ready (a replacement has started and takes tasks), of how many."""
        live = list(self.live)
        ready = 0
        for worker in live:
            with suppress(OSError):
                ready += worker.get("/readyz")[0] == 200
        return ready, len(live)

    def all_alive(self) -> bool:
        return all(worker.process.poll() is None for worker in self.live)

    def stop(self) -> None:
        for worker in self.live + self.dead:
            worker.stop()


@contextmanager
def redis_and_crew(backend: str, workers: int, **extra: str) -> Iterator[tuple[RedisServer, Crew]]:
    redis = RedisServer()
    redis.start()
    crew = Crew(worker_env(redis, backend, **extra))
    try:
        crew.start(workers)
        yield redis, crew
    finally:
        crew.stop()
        redis.stop()


def burst(redis: RedisServer, backend: str, count: int, seconds: float = 0.02) -> list[str]:
    return push_tasks(redis.url, backend, QUEUE, count, handler="sleep", payload={"seconds": seconds, "incr": EFFECT})


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def effect_counts(client: Any) -> dict[str, int]:
    """Runs per task id of the ``sleep`` handler's effect (more than 1: the task ran twice)."""
    return {text(k): int(v) for k, v in client.hgetall(f"swell:effects:{EFFECT}").items()}


def tally(redis: RedisServer, ids: list[str]) -> dict[str, int]:
    """done / dead_lettered / unsettled / duplicated, read in one pipelined round trip."""
    client = redis.client()
    try:
        pipe = client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(status_key(task_id), "state")
        states = [text(s) if s else "unknown" for s in pipe.execute()]
        effects = effect_counts(client)
    finally:
        client.close()
    done = states.count("succeeded")
    dead = states.count("failed")
    return {
        "done": done,
        "dead_lettered": dead,
        "unsettled": len(ids) - done - dead,
        "duplicated": sum(1 for task_id in ids if effects.get(task_id, 0) > 1),
    }


# A burst's tail: the last tasks, whose wait past the bulk of the burst shows a stranded delivery.
TAIL_SHARE = 0.01


def settle(
    redis: RedisServer, ids: list[str], timeout: float, since: float, tails: list[float] | None = None
) -> tuple[dict[str, int], float | None]:
    """Waits until every task is settled (or ``timeout``); the seconds from ``since`` to that, or None.
    ``tails`` gets the seconds from the moment only ``TAIL_SHARE`` of the burst was left to the end."""
    deadline = time.monotonic() + timeout
    tail_from: float | None = None
    while True:
        try:
            counts = tally(redis, ids)
        except Exception:  # Redis may still be coming back
            counts = None
        now = time.monotonic()
        if counts is not None and tail_from is None and counts["unsettled"] <= max(1, TAIL_SHARE * len(ids)):
            tail_from = now
        if counts is not None and counts["unsettled"] == 0:
            if tails is not None and tail_from is not None:
                tails.append(round(now - tail_from, 2))
            return counts, round(now - since, 2)
        if time.monotonic() > deadline:
            return counts or {"done": 0, "dead_lettered": 0, "unsettled": len(ids), "duplicated": 0}, None
        time.sleep(0.25)


def outcome(
    scenario: str, backend: str, ids: list[str], counts: Mapping[str, int], recovery: float | None, **details: Any
) -> Outcome:
    return Outcome(
        scenario=scenario,
        backend=backend,
        sent=len(ids),
        done=counts["done"],
        dead_lettered=counts["dead_lettered"],
        lost=counts["unsettled"],
        duplicated=counts["duplicated"],
        recovery_seconds=recovery,
        details=details,
    )


# ---- scenarios -------------------------------------------------------------------------------------------


def fleet_rate(backend: str, tasks: int, workers: int) -> float:
    """Tasks per second the same fleet settles the same burst at without a crash: the control run."""
    with redis_and_crew(backend, workers) as (redis, _):
        started = time.monotonic()
        ids = burst(redis, backend, tasks)
        _, seconds = settle(redis, ids, timeout=300, since=started)
        return len(ids) / seconds if seconds else 0.0


@dataclass
class Abandoned:
    """A task a killed worker held: when its consumer died and when another could first take it over."""

    task_id: str
    killed_at: float  # wall clock
    claimable_at: float  # wall clock: the entry's idle time (Streams) or the heartbeat (lists) runs out


def held_by(redis: RedisServer, backend: str, consumer: str, now: float) -> list[Abandoned]:
    """What ``consumer`` held when it died, read from Redis as any other consumer would see it."""
    keys = QueueKeys(QUEUE)
    client = redis.client()
    try:
        if backend == "redis-streams":
            pending = client.xpending_range(QUEUE, "swell", "-", "+", 1000, consumername=consumer)
            heartbeat_ms = client.pttl(keys.heartbeat(consumer))
            held = []
            for entry in pending:
                found = client.xrange(QUEUE, entry["message_id"], entry["message_id"])
                if found:
                    idle_left = CONSUMER_TIMEOUT_SECONDS - entry["time_since_delivered"] / 1000
                    soonest = min(idle_left, heartbeat_ms / 1000) if heartbeat_ms > 0 else idle_left
                    task_id = json.loads(found[0][1][b"body"])["id"]
                    held.append(Abandoned(task_id, now, now + max(0.0, soonest)))
            return held
        heartbeat_ms = client.pttl(keys.heartbeat(consumer))
        bodies = client.lrange(keys.processing(consumer), 0, -1)
        return [Abandoned(json.loads(b)["id"], now, now + max(0.0, heartbeat_ms / 1000)) for b in bodies]
    finally:
        client.close()


def abandoned_report(
    redis: RedisServer, abandoned: list[Abandoned], readiness: list[tuple[float, int, int]]
) -> dict[str, Any]:
    """How long after it could first be taken over, by a worker that was ready, each abandoned task was
    done (from its record's last update); those done before their worker died had their result committed
    but not acked (a duplicate run follows)."""
    client = redis.client()
    try:
        pipe = client.pipeline(transaction=False)
        for task in abandoned:
            pipe.hget(status_key(task.task_id), "updated_at")
        finished = [float(at) if at else None for at in pipe.execute()]
    finally:
        client.close()

    def takeable_at(task: Abandoned) -> float:
        return next((at for at, ready, _ in readiness if at >= task.claimable_at and ready > 0), task.claimable_at)

    lags = sorted(
        at - takeable_at(task) for task, at in zip(abandoned, finished, strict=True) if at and at > task.killed_at
    )
    return {
        "abandoned": len(abandoned),
        "abandoned_done_before_their_worker_died": sum(
            1 for task, at in zip(abandoned, finished, strict=True) if at and at <= task.killed_at
        ),
        "abandoned_done_after_takeable_seconds": {
            "p50": round(lags[len(lags) // 2], 2) if lags else None,
            "max": round(lags[-1], 2) if lags else None,
        },
    }


def worker_kills(backend: str, tasks: int = 5000, kills: int = 25, workers: int = 3) -> Outcome:
    """SIGKILL a random worker ``kills`` times during a burst (each replaced, as by its Deployment).

    What remains after the last kill needs time at the fleet's own pace, crash or not, so beside the settle
    time the outcome gives ``excess_seconds``: the settle time beyond what the unsettled tasks need at the
    rate of a control run of the same burst without crashes, i.e. what the crashes cost (bound: consumer
    timeout + 5 s). Part of that cost is the replacements' start (``fleet_whole_after_seconds``, longer the
    busier the machine), during which no one can take anything over; ``excess_after_fleet_whole_seconds``
    is the cost from the moment every live worker is ready, which recovery alone decides. Each task a
    killed worker held is followed: done how long after it could first be taken over by a ready worker."""
    rate = fleet_rate(backend, tasks, workers)
    with redis_and_crew(backend, workers) as (redis, crew):
        ids = burst(redis, backend, tasks)
        abandoned: list[Abandoned] = []
        # (wall time, live workers ready, live workers), sampled until the burst is settled.
        readiness: list[tuple[float, int, int]] = []
        whole: list[tuple[float, int]] = []  # (seconds after the last kill, unsettled) once all are ready
        last_kill: list[float] = []
        settled = threading.Event()

        def watch_fleet() -> None:
            while not settled.wait(0.1):
                readiness.append((time.time(), *crew.ready_count()))
                if last_kill and not whole and readiness[-1][1] == readiness[-1][2]:
                    whole.append((time.monotonic() - last_kill[0], tally(redis, ids)["unsettled"]))

        watcher = threading.Thread(target=watch_fleet, daemon=True)
        watcher.start()
        spacing = 0.6
        for _ in range(kills):
            time.sleep(random.uniform(0.5 * spacing, 1.5 * spacing))
            crew.kill_one(lambda name: abandoned.extend(held_by(redis, backend, name, time.time())))
        last_kill.append(time.monotonic())
        at_last_kill = tally(redis, ids)
        counts, recovery = settle(redis, ids, timeout=180, since=last_kill[0])
        settled.set()
        watcher.join(timeout=30)
        floor = at_last_kill["unsettled"] / rate if rate > 0 else None
        excess = None if recovery is None or floor is None else round(max(0.0, recovery - floor), 2)
        whole_after, unsettled_when_whole = whole[0] if whole else (None, None)
        excess_whole = None
        if recovery is not None and whole_after is not None and unsettled_when_whole is not None and rate > 0:
            excess_whole = round(max(0.0, recovery - whole_after - unsettled_when_whole / rate), 2)
        bound = CONSUMER_TIMEOUT_SECONDS + 5
        return outcome(
            "worker_kills",
            backend,
            ids,
            counts,
            recovery,
            kills=kills,
            consumer_timeout_seconds=CONSUMER_TIMEOUT_SECONDS,
            unsettled_at_last_kill=at_last_kill["unsettled"],
            control_tasks_per_second=round(rate, 1),
            excess_seconds=excess,
            excess_within_consumer_timeout_plus_5s=excess is not None and excess <= bound,
            fleet_whole_after_seconds=None if whole_after is None else round(whole_after, 2),
            unsettled_when_fleet_whole=unsettled_when_whole,
            excess_after_fleet_whole_seconds=excess_whole,
            excess_after_fleet_whole_within_consumer_timeout_plus_5s=excess_whole is not None and excess_whole <= bound,
            **abandoned_report(redis, abandoned, readiness),
            load_average_at_end=[round(x, 2) for x in os.getloadavg()],
        )


def _restart_redis(redis: RedisServer, kill: bool, down_seconds: float) -> None:
    """Stop Redis (SIGTERM, or SIGKILL: no last AOF flush) and start it again on its port and directory."""
    assert redis.process is not None
    if kill:
        redis.process.kill()
        redis.process.wait(timeout=10)
        redis.process = None
    else:
        redis.stop()
    time.sleep(down_seconds)
    redis.start()


def redis_restart(backend: str, tasks: int = 3000, kill: bool = False) -> Outcome:
    """Redis restarted mid-burst (``kill``: SIGKILLed, with AOF everysec) while the workers keep running."""
    with redis_and_crew(backend, 3) as (redis, crew):
        ids = burst(redis, backend, tasks)
        time.sleep(2.0)
        _restart_redis(redis, kill, down_seconds=2.0)
        back = time.monotonic()
        counts, recovery = settle(redis, ids, timeout=120, since=back)
        return outcome(
            "redis_sigkill_aof" if kill else "redis_restart",
            backend,
            ids,
            counts,
            recovery,
            workers_alive=crew.all_alive(),
        )


def connection_drops(backend: str, tasks: int = 3000, seconds: float = 12.0, rounds: int = 5) -> list[Outcome]:
    """Redis kills every client connection every 10-50 ms during a burst; each round a fresh burst."""
    results = []
    with redis_and_crew(backend, 3) as (redis, crew):
        for round_ in range(rounds):
            ids = burst(redis, backend, tasks, seconds=0.05)
            dropped = drop_connections(redis, seconds)
            over = time.monotonic()
            tails: list[float] = []
            counts, recovery = settle(redis, ids, timeout=60, since=over, tails=tails)
            results.append(
                outcome(
                    "connection_drops",
                    backend,
                    ids,
                    counts,
                    recovery,
                    round=round_ + 1,
                    connections_dropped=dropped,
                    workers_alive=crew.all_alive(),
                    tail_seconds=tails[0] if tails else None,
                    settled_within_30s=recovery is not None and recovery <= 30,
                )
            )
    return results


def claim_over(backend: str = "redis-streams") -> Outcome:
    """Two consumers fight over one Streams entry: a worker holds it, another consumer claims it over
    (XCLAIM), and the worker's settle must then do nothing: the entry stays pending with the new owner."""
    with redis_and_crew(backend, 1, SWELL_CONCURRENCY="1", SWELL_CONSUMER_TIMEOUT_SECONDS="60") as (redis, crew):
        ids = push_tasks(redis.url, backend, QUEUE, 1, handler="sleep", payload={"seconds": 3, "incr": EFFECT})
        client = redis.client()
        try:
            deadline = time.monotonic() + 30
            pending: list[dict[str, Any]] = []
            while not pending and time.monotonic() < deadline:
                pending = client.xpending_range(QUEUE, "swell", min="-", max="+", count=10)
                time.sleep(0.05)
            assert pending, "the worker never took the entry"
            entry = pending[0]["message_id"]
            client.xclaim(QUEUE, "swell", "thief", 0, [entry])
            time.sleep(5.0)  # the worker's handler ends and it tries to settle (and to keep the entry alive)
            owner = client.xpending_range(QUEUE, "swell", min=entry, max=entry, count=1)
            loser_acted = not owner or text(owner[0]["consumer"]) != "thief"
            effects = effect_counts(client)
        finally:
            client.close()
        counts = {
            "done": sum(1 for v in effects.values() if v >= 1),
            "dead_lettered": 0,
            "unsettled": 0,
            "duplicated": 0,
        }
        counts["unsettled"] = 1 - counts["done"]
        return outcome(
            "claim_over", backend, ids, counts, None, loser_settle_acted=loser_acted, workers_alive=crew.all_alive()
        )


def bad_payloads(backend: str) -> Outcome:
    """Junk bytes, envelopes that are not tasks, unknown handlers and tasks that always fail, among good ones:
    every bad one is dead-lettered with a reason, every good one succeeds, the worker lives."""
    with redis_and_crew(backend, 1, SWELL_MAX_ATTEMPTS="3", SWELL_MAX_PAYLOAD_BYTES="2000") as (redis, crew):
        client = redis.client()
        junk = [
            b"{not json",
            json.dumps({"handler": "echo"}).encode(),
            b"null",
            b"[]",
            json.dumps({"id": 5}).encode(),
        ]
        try:
            for body in junk:
                if backend == "redis-streams":
                    client.xadd(QUEUE, {"body": body})
                else:
                    client.lpush(QUEUE, body)
        finally:
            client.close()
        bad = push_tasks(redis.url, backend, QUEUE, 3, handler="translate")
        bad += push_tasks(redis.url, backend, QUEUE, 2, handler="echo", payload={"blob": "x" * 5000})
        bad += push_tasks(redis.url, backend, QUEUE, 2, handler="fail", payload={"message": "always"})
        good = burst(redis, backend, 50)
        started = time.monotonic()
        counts, recovery = settle(redis, bad + good, timeout=60, since=started)
        letters: list[dict[str, str]] = []
        deadline = time.monotonic() + 20
        while len(letters) < len(junk) + len(bad) and time.monotonic() < deadline:
            letters = dead_letters(redis.url, backend)
            time.sleep(0.25)
        reasons = sorted({str(entry.get("reason", ""))[:60] for entry in letters})
        good_counts = tally(redis, good)
        return outcome(
            "bad_payloads",
            backend,
            bad + good,
            counts,
            recovery,
            junk_sent=len(junk),
            dead_letters=len(letters),
            every_bad_one_dead_lettered=len(letters) == len(junk) + len(bad),
            good_done=good_counts["done"],
            reasons=reasons,
            workers_alive=crew.all_alive(),
        )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def push_flood(requests: int = 2000, size: int = 400_000, senders: int = 16) -> Outcome:
    """Pushes of large tasks, far more at once than the worker has slots: refused early (429: Pub/Sub keeps
    and retries them), never read into memory first; RSS stays under 2x the idle RSS."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.fixtures.pubsub_emulator import PubSubEmulator
    from tests.operator.pubsub_kit import fresh_names
    from tests.pubsub.test_push_endpoint import envelope, post, push_worker

    emulator, redis = PubSubEmulator(), RedisServer()
    redis.start()
    started: list[WorkerProcess] = []

    def start(env: Mapping[str, str], *, ready: bool = True) -> WorkerProcess:
        worker = WorkerProcess(env)
        started.append(worker)
        return worker.wait_ready() if ready else worker

    try:
        names = fresh_names(emulator)
        emulator.create(names["topic"], names["sub"])
        worker = push_worker(
            start, emulator, names, redis.url, SWELL_PUSH_TOKEN="s3cret", SWELL_CONCURRENCY="4", SWELL_HANDLERS="sleep"
        )
        time.sleep(1.0)
        idle = rss_mb(worker.process.pid)
        url = worker.base_url + "/pubsub/push?token=s3cret"
        pad = "x" * size
        ids = [uuid.uuid4().hex for _ in range(requests)]
        peak = idle

        def one(task_id: str) -> int:
            task = {"id": task_id, "handler": "sleep", "payload": {"seconds": 0.05, "incr": EFFECT, "pad": pad}}
            return post(url, envelope(json.dumps(task).encode()), timeout=60)

        with ThreadPoolExecutor(senders) as pool:
            pending = [pool.submit(one, task_id) for task_id in ids]
            while not all(job.done() for job in pending):
                peak = max(peak, rss_mb(worker.process.pid))
                time.sleep(0.05)
            answers = [job.result() for job in pending]
        alive = worker.process.poll() is None and worker.get("/healthz")[0] == 200
        client = redis.client()
        effects = effect_counts(client)
        client.close()
    finally:
        for worker in started:
            worker.stop()
        emulator.stop()
        redis.stop()
    accepted = [task_id for task_id, code in zip(ids, answers, strict=True) if code in (200, 204)]
    refused = sum(1 for code in answers if code == 429)
    counts = {
        "done": sum(1 for task_id in accepted if effects.get(task_id, 0) >= 1),
        "dead_lettered": 0,
        "unsettled": sum(1 for task_id in accepted if effects.get(task_id, 0) == 0),  # acked but never run
        "duplicated": sum(1 for count in effects.values() if count > 1),
    }
    return outcome(
        "push_flood",
        "pubsub-push",
        ids,
        counts,
        None,
        refused_429=refused,
        other_answers=sorted({code for code in answers if code not in (200, 204, 429)}),
        idle_rss_mb=round(idle, 1),
        peak_rss_mb=round(peak, 1),
        rss_under_2x_idle=peak < 2 * idle,
        worker_alive=alive,
    )


@dataclass
class OperatorStage:
    """A namespace of its own on the local control plane, with the WorkerPool CRD and a Redis of its own."""

    cluster: Any
    namespace: str
    redis: RedisServer
    operators: list[Any] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def start_operator(self, *, identity: str | None = None, extra_args: tuple[str, ...] = ()) -> Any:
        from tests.fixtures.operator import OperatorProcess

        self.operators.append(OperatorProcess(self.cluster, self.namespace, identity=identity, extra_args=extra_args))
        return self.operators[-1].wait_up()


@contextmanager
def operator_stage() -> Iterator[OperatorStage]:
    """The stage, torn down in order: pools deleted while their operators still run (finalizers), then
    the operators, what the scenario added to ``cleanups``, the Redis and the namespace."""
    from tests.fixtures.cluster import Cluster
    from tests.fixtures.operator import apply_workerpool_crd
    from tests.tooling.controlplane.cluster import ensure_cluster

    cluster = Cluster.from_info(ensure_cluster(os.environ.get("SWELL_TEST_CLUSTER", "swell-test")))
    stage = OperatorStage(cluster, f"chaos-{uuid.uuid4().hex[:6]}", RedisServer())
    cluster.kubectl("create", "namespace", stage.namespace)
    apply_workerpool_crd(cluster)
    stage.redis.start()
    try:
        yield stage
    finally:
        cluster.kubectl("delete", "workerpools.swell.dev", "--all", "-n", stage.namespace, "--timeout=60s", check=False)
        for operator in stage.operators:
            operator.stop()
            operator.log_path.unlink(missing_ok=True)
        for cleanup in stage.cleanups:
            cleanup()
        stage.redis.stop()
        cluster.kubectl("delete", "namespace", stage.namespace, "--wait=false", check=False)


def leader_killed_during_scale_in(tasks: int = 300) -> Outcome:
    """Two operators on the local control plane, real workers as pods (the pod runner): the Lease holder is
    SIGKILLed as the pool scales in; the standby takes the Lease and finishes, and no task is lost."""
    from tests.operator.kube import apply, pool_manifest, redis_secret, replicas_of, wait_for
    from tests.operator.test_leader import lease_holder
    from tests.tooling.controlplane.podrunner import PodRunner

    with operator_stage() as stage:
        cluster, namespace, redis = stage.cluster, stage.namespace, stage.redis
        stage.cleanups.append(PodRunner(cluster.kubeconfig).start().stop)
        operators = [stage.start_operator(identity=f"op-{n}") for n in "ab"]
        holder = wait_for(lambda: lease_holder(cluster, namespace), 30, "a Lease holder")
        leader = next(op for op in operators if op.identity == holder)
        standby = next(op for op in operators if op.identity != holder)
        redis_secret(cluster, namespace, redis.url)
        worker = {
            "image": "swell-worker:local",
            "handlers": ["sleep"],
            "terminationGracePeriodSeconds": 30,
            "env": [
                {"name": "SWELL_HTTP_HOST", "value": "127.0.0.1"},
                {"name": "SWELL_RESULT_REDIS_URL", "value": redis.url},
                {"name": "SWELL_CONSUMER_TIMEOUT_SECONDS", "value": str(CONSUMER_TIMEOUT_SECONDS)},
            ],
            "podTemplate": {
                "metadata": {
                    "annotations": {"swell.dev/run-locally": "true", "swell.dev/local-port-env": "SWELL_HTTP_PORT"}
                }
            },
        }
        scaling = {"targetWaitSeconds": 5, "taskSecondsHint": 0.5, "idleSecondsBeforeZero": 3}
        scaling |= {"scaleDownStabilizationSeconds": 2, "pollIntervalSeconds": 0.5}
        manifest = pool_manifest(
            "pool", "redis-streams", QUEUE, concurrency=4, replicas=(0, 4), worker=worker, scaling=scaling
        )
        apply(cluster, namespace, manifest)
        wait_for(lambda: replicas_of(cluster, namespace, "pool") == 0, 60, "the pool at zero")
        ids = burst(redis, "redis-streams", tasks, seconds=0.3)
        wait_for(lambda: (replicas_of(cluster, namespace, "pool") or 0) >= 2, 90, "scale-out")
        peak, deadline = 0, time.monotonic() + 180
        while time.monotonic() < deadline:  # the scale-in has started when the replicas fall below their peak
            replicas = replicas_of(cluster, namespace, "pool") or 0
            peak = max(peak, replicas)
            if replicas < peak:
                break
            time.sleep(0.1)
        leader.process.kill()
        killed = time.monotonic()
        wait_for(lambda: lease_holder(cluster, namespace) == standby.identity and standby.is_leader(), 60, "takeover")
        took_over = round(time.monotonic() - killed, 2)
        counts, recovery = settle(redis, ids, timeout=120, since=killed)
        wait_for(lambda: replicas_of(cluster, namespace, "pool") == 0, 90, "the new leader scaling to zero")
        at_zero = round(time.monotonic() - killed, 2)
        return outcome(
            "leader_killed_during_scale_in",
            "redis-streams",
            ids,
            counts,
            recovery,
            peak_replicas=peak,
            standby_leading_after_seconds=took_over,
            at_zero_after_seconds=at_zero,
        )


def kind_scenario(name: str) -> Callable[[bool], list[Outcome]]:
    """A pod-level scenario of bench/chaos_kind.py (imported on use: it needs Docker and kind)."""

    def run(short: bool) -> list[Outcome]:
        from bench import chaos_kind

        return chaos_kind.run(name, BACKENDS, short)

    return run


def activator_junk_tokens(senders: int = 4) -> Outcome:
    """Junk bearer tokens flood the operator's activator while Google's certificate endpoint hangs, and a
    bystander Redis pool at zero gets a task (issue 17 §4). The run is the activator test's own
    (``tests.operator.test_activator.junk_tokens_against_a_bystander``): the bystander's wake against a calm
    pool's wake before the flood, /healthz, and whether the leader kept and renewed its Lease. ``sent`` counts
    the junk pushes; ``lost``, those acknowledged (2xx), which Pub/Sub would drop though no worker ran them."""
    from tests.fixtures.pubsub_emulator import PubSubEmulator
    from tests.operator.test_activator import junk_tokens_against_a_bystander

    with operator_stage() as stage:
        emulator = PubSubEmulator()
        stage.cleanups.append(emulator.stop)
        run = junk_tokens_against_a_bystander(
            stage.cluster, stage.namespace, stage.redis.url, emulator, stage.start_operator, senders=senders
        )
    answers = run.answers
    acknowledged = sum(1 for code in answers if 200 <= code < 300)
    return Outcome(
        scenario="activator_junk_tokens",
        backend="pubsub-push + redis-list bystander",
        sent=len(answers),
        done=0,
        dead_lettered=0,
        lost=acknowledged,
        duplicated=0,
        recovery_seconds=None,
        details={
            "baseline_wake_seconds": round(run.baseline_wake_seconds, 3),
            "wake_under_junk_seconds": round(run.wake_under_junk_seconds, 3),
            "wake_within_1s_or_baseline_plus_0_5s": run.wake_under_junk_seconds
            < max(1.0, run.baseline_wake_seconds + 0.5),
            "healthz_ms": round(run.healthz_seconds * 1000, 1),
            "lease_kept": run.lease_kept,
            "answers": {str(code): answers.count(code) for code in sorted(set(answers))},
            "senders": senders,
        },
    )


SCENARIOS: dict[str, Callable[[bool], list[Outcome]]] = {
    "worker_kills": lambda short: [
        worker_kills(b, tasks=300 if short else 5000, kills=3 if short else 25) for b in BACKENDS
    ],
    "redis_restart": lambda short: [redis_restart(b, tasks=300 if short else 3000) for b in BACKENDS],
    "redis_sigkill_aof": lambda short: [redis_restart(b, tasks=300 if short else 3000, kill=True) for b in BACKENDS],
    "connection_drops": lambda short: [
        o
        for b in BACKENDS
        for o in connection_drops(b, tasks=300 if short else 3000, seconds=3 if short else 12, rounds=1 if short else 5)
    ],
    "claim_over": lambda short: [claim_over()],
    "bad_payloads": lambda short: [bad_payloads(b) for b in BACKENDS],
    "push_flood": lambda short: [push_flood(requests=200 if short else 2000)],
    "leader_killed_during_scale_in": lambda short: [leader_killed_during_scale_in(tasks=150 if short else 600)],
    "kind_pod_deletes": kind_scenario("kind_pod_deletes"),
    "kind_node_drain": kind_scenario("kind_node_drain"),
    "activator_junk_tokens": lambda short: [activator_junk_tokens(senders=2 if short else 4)],
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--short", action="store_true", help="Small counts and one round (as tests/chaos runs).")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    for name in args.scenarios:
        for result in SCENARIOS[name](args.short):
            row = asdict(result)
            print(json.dumps(row), flush=True)
            results.append(row)
    command = ("python -m bench.chaos " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    name = "chaos_short" if args.short else "chaos"
    path = RESULTS / f"{name}.json"
    # A run of some scenarios replaces their rows in the file and keeps the others, with every command.
    previous = json.loads(path.read_text()) if path.exists() and args.scenarios != list(SCENARIOS) else {}
    kept = [row for row in previous.get("rows", []) if row["scenario"] not in set(args.scenarios)]
    rows = kept + results
    report = {
        "name": name,
        "commands": [*previous.get("commands", [previous["command"]] if "command" in previous else []), command],
        "machine": f"{os.uname().sysname} {os.uname().release}",
        "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "lost_total": sum(r["lost"] for r in rows),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote bench/results/{name}.json ({command.strip()})")


if __name__ == "__main__":
    main()
