"""Real KEDA next to Swell on one kind cluster: the same trace, the same workers, two scalers.

One compressed trace (10 minutes of arrivals: idle, steady, a gap, a burst, a plateau, idle again, a ramp)
is driven at the same instants into two Redis Streams. ``keda-tasks`` is read by a plain Deployment of
Swell's worker image, scaled by a KEDA v2.21.0 ScaledObject with an expert's settings; ``swell-tasks`` by a
WorkerPool with the same concurrency, the same maximum and the WorkerPool defaults. The two Deployments
share one pod template (the operator's own renderer), so the scaler is the only difference.

KEDA's settings are what the issue calls an expert's: ``pollingInterval`` 5 s, ``cooldownPeriod`` 60 s, a
60 s HPA scale-down window, and two redis-streams triggers whose maximum the HPA takes: the group's lag
(tasks not yet delivered, ``lagCount`` = what one pod drains in about 5 s) and its pending entries (tasks
in flight, ``pendingEntriesCount`` 3 of 4 slots per pod). The in-flight trigger keeps the pool up while
work runs, so it is not scaled to zero whenever the backlog reads 0.

Every task is the bundled ``sleep`` handler (0.5-2 s, or heavy-tailed with ``--service-times lognormal``;
CPU-light) recording an effect. The bench samples both Deployments and their pods every second (replicas,
ready replicas, pods that exist: a pod costs from its creation until it is gone, as in the simulator),
reads each task's status record at the end (wait = finished - submitted - sleep time), then runs
bench/policy's simulator models on the same trace with the pod start time measured here and reports how
far each model's replica-seconds land from the run.

    python -m bench.keda_side_by_side
    python -m bench.keda_side_by_side --compare-recorded   # the models against the committed run, no cluster

``--compare-recorded [RUN_JSON]`` reruns the simulator's models against a committed run's own record
(bench/results/keda_side_by_side.json unless given) and writes keda_side_by_side_model.json in ``--out-dir``:
the same trace as it was actually submitted (the driver fell behind during the burst; the streams' lengths
while no pod was ready show when each task went in), each task's slot time including the worker's own
per-task time (measured from how fast both pools drained the burst at full size), and Swell's decision as
of the commit that made the run (``git show``), so the simulator is what is being compared, not a newer
decision. The KEDA model is also run at evenly spaced phases of its loops, which the run did not record.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import math
import platform
import random
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.policy.policies import KedaHpa, Swell  # noqa: E402
from bench.policy.simulator import percentile, simulate  # noqa: E402
from bench.policy.traces import Trace  # noqa: E402

if TYPE_CHECKING:
    from tests.tooling.stack import KindStack

COMMAND = "python -m bench.keda_side_by_side"
RESULTS = ROOT / "bench" / "results"
KEDA_DIR = ROOT / "bench" / "keda"
KEDA_VERSION = "v2.21.0"
CLUSTER = "swell-keda"
NAMESPACE = "keda-bench"
GROUP = "swell"
CONCURRENCY = 4
MAX_REPLICAS = 4
KEDA_SIDE, SWELL_SIDE = "keda", "swell"
STREAMS = {KEDA_SIDE: "keda-tasks", SWELL_SIDE: "swell-tasks"}
DEPLOYMENTS = {KEDA_SIDE: "keda-workers", SWELL_SIDE: "swell-workers"}
SIDE_LABEL = "bench.swell.dev/side"

# The expert's KEDA (see the module docstring). One pod drains CONCURRENCY / mean service time tasks a
# second, 3.2 here, so a 5 s backlog per pod is 16 tasks.
KEDA_POLLING_SECONDS = 5
KEDA_COOLDOWN_SECONDS = 60
KEDA_SCALE_DOWN_WINDOW_SECONDS = 60
KEDA_LAG_PER_POD = 16
KEDA_PENDING_PER_POD = 3
# Where KEDA's poll and the HPA's sync fall against the trace is not recorded: the recorded comparison also
# runs the KEDA model at this many evenly spaced phases of both loops (phase 0 is the headline model).
KEDA_LOOP_PHASES = 10

# WorkerPool defaults (operator/swell_operator/model.py), written out so a change there shows up here.
SWELL_SCALING = {
    "targetWaitSeconds": 30,
    "taskSecondsHint": 1,
    "idleSecondsBeforeZero": 30,
    "scaleDownStabilizationSeconds": 60,
    "pollIntervalSeconds": 1,
}

# (start, end, tasks/s): the trace's arrival rate, piecewise; a linear ramp where two rates are given.
PHASES: tuple[tuple[float, float, float, float], ...] = (
    (0, 30, 0.0, 0.0),  # both pools asleep at zero
    (30, 180, 1.5, 1.5),  # steady, under one pod
    (180, 240, 0.0, 0.0),  # a gap as long as KEDA's cooldown
    (240, 270, 10.0, 10.0),  # a burst that needs every replica
    (270, 390, 3.0, 3.0),  # a plateau of about two pods
    (390, 480, 0.0, 0.0),  # idle: both go back to zero
    (480, 600, 0.0, 6.0),  # a ramp
)
TRACE_SECONDS = PHASES[-1][1]
SERVICE_RANGE = (0.5, 2.0)
# ``--service-times lognormal``: bench/policy's heavy-tailed trace (median 0.6 s, sigma 1, mean ~1 s), capped
# so one unlucky draw cannot hold the run open for minutes (P(> 60 s) is 2e-5 a task).
LOGNORMAL_MEDIAN_SECONDS, LOGNORMAL_SIGMA = 0.6, 1.0
SERVICE_CAP_SECONDS = 60.0
SERVICE_TIMES = ("uniform", "lognormal")
# After the last arrival: how long to keep watching for both pools to drain and return to zero.
TAIL_CAP_SECONDS = 300.0


def arrival_rate(t: float) -> float:
    for start, end, first, last in PHASES:
        if start <= t < end:
            return first + (last - first) * (t - start) / (end - start)
    return 0.0


def make_trace(seed: int, time_scale: float = 1.0, service_times: str = "uniform") -> list[tuple[float, float]]:
    """Poisson arrivals (thinning) at ``arrival_rate``, each with a sleep time drawn from ``service_times``;
    seeded. The lognormal times come from a generator of their own, so both kinds share the arrivals.
    ``time_scale`` < 1 shortens every phase (a smoke run of the harness, not a result)."""
    if service_times not in SERVICE_TIMES:
        raise ValueError(f"service times {service_times!r}: expected one of {', '.join(SERVICE_TIMES)}")
    rng = random.Random(seed)
    heavy = random.Random(f"{seed}-lognormal")

    def draw() -> float:
        uniform = rng.uniform(*SERVICE_RANGE)  # drawn either way: the arrivals then come out the same
        if service_times == "uniform":
            return uniform
        return min(heavy.lognormvariate(math.log(LOGNORMAL_MEDIAN_SECONDS), LOGNORMAL_SIGMA), SERVICE_CAP_SECONDS)

    peak = max(max(first, last) for *_, first, last in PHASES)
    trace: list[tuple[float, float]] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= TRACE_SECONDS * time_scale:
            return trace
        if rng.random() * peak <= arrival_rate(t / time_scale):
            trace.append((round(t, 3), round(draw(), 3)))


def nominal_trace(report: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The trace a recorded run planned (runs before ``--service-times`` had uniform ones)."""
    return make_trace(report["trace"]["seed"], service_times=report["trace"].get("service_times", "uniform"))


# --- deployment -------------------------------------------------------------------------------------------
def build_keda(log: Callable[[str], None]) -> tuple[list[str], float]:
    """bench/keda/build.sh: the two images, and the seconds the Go build took (cached after the first run)."""
    began = time.monotonic()
    done = subprocess.run([str(KEDA_DIR / "build.sh")], capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        raise SystemExit(f"bench/keda/build.sh failed:\n{done.stderr[-3000:]}")
    lines = done.stdout.split()
    log(f"KEDA images {lines[:2]} ready ({time.monotonic() - began:.0f}s; Go build took {lines[-1]} s)")
    return lines[:2], float(lines[-1])


def keda_module_dir() -> Path:
    found = subprocess.run(
        ["go", "mod", "download", "-json", f"github.com/kedacore/keda/v2@{KEDA_VERSION}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return Path(json.loads(found.stdout)["Dir"])


def bring_up(keda_images: list[str], log: Callable[[str], None]) -> KindStack:
    """tests/tooling/stack.bring_up's steps on a one-node cluster of its own, without the vector store
    (the ``sleep`` handler never opens it): Swell's images and chart, Redis with AOF, KEDA's images."""
    from tests.tooling.controlplane.cluster import binaries
    from tests.tooling.kind.cluster import ensure_kind_cluster, load_images
    from tests.tooling.stack import KindStack, build_images, ensure_docker, example_manifests, install_chart

    began = time.monotonic()
    ensure_docker()
    images = build_images()
    cluster = ensure_kind_cluster(CLUSTER, KEDA_DIR / "kind-config.yaml")
    log(f"kind cluster {cluster.name} ready ({time.monotonic() - began:.0f}s)")
    load_images(cluster, [images.worker, images.operator, images.redis, *keda_images])
    log(f"images loaded on the node ({time.monotonic() - began:.0f}s)")
    stack = KindStack(cluster=cluster, images=images, namespace=NAMESPACE, helm=binaries()["helm"])
    stack.kubectl("create", "namespace", NAMESPACE, check=False)
    stack.apply(example_manifests("redis.yaml", NAMESPACE, images.redis))
    install_chart(stack)
    stack.wait_rolled_out("redis", NAMESPACE)
    log(f"Swell's chart and Redis ready ({time.monotonic() - began:.0f}s)")
    return stack


def deploy_keda(stack: KindStack, log: Callable[[str], None]) -> None:
    """KEDA's CRDs (from the module), then bench/keda/keda.yaml; waits for the external-metrics API."""
    crds = keda_module_dir() / "config" / "crd" / "bases"
    stack.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds), timeout=180)
    stack.kubectl("apply", "-f", str(KEDA_DIR / "keda.yaml"), timeout=120)
    for deployment in ("keda-operator", "keda-metrics-apiserver"):
        stack.wait_rolled_out(deployment, "keda", timeout=600)
    stack.kubectl(
        "wait",
        "--for=condition=Available",
        "apiservice/v1beta1.external.metrics.k8s.io",
        "--timeout=300s",
        timeout=320,
    )
    log("KEDA operator and metrics API server ready; v1beta1.external.metrics.k8s.io Available")


def worker_pool(image: str, scaling: Mapping[str, Any]) -> dict[str, Any]:
    from tests.operator.kube import pool_manifest

    manifest = pool_manifest(
        DEPLOYMENTS[SWELL_SIDE],
        "redis-streams",
        STREAMS[SWELL_SIDE],
        concurrency=CONCURRENCY,
        replicas=(0, MAX_REPLICAS),
        scaling=dict(scaling),
        worker={"image": image, "handlers": ["sleep"], "terminationGracePeriodSeconds": 30},
    )
    manifest["spec"]["worker"]["podTemplate"] = {"metadata": {"labels": {SIDE_LABEL: SWELL_SIDE}}}
    return manifest


def keda_deployment(pool: dict[str, Any]) -> dict[str, Any]:
    """The worker Deployment the operator renders for the same pool, on KEDA's stream, owned by no one."""
    from swell_operator.deployment import render_deployment
    from swell_operator.model import WorkerPoolSpec

    spec = json.loads(json.dumps(pool["spec"]))
    spec["queue"]["streams"]["streams"] = [STREAMS[KEDA_SIDE]]
    spec["worker"]["podTemplate"] = {"metadata": {"labels": {SIDE_LABEL: KEDA_SIDE}}}
    rendered: dict[str, Any] = render_deployment(DEPLOYMENTS[KEDA_SIDE], WorkerPoolSpec.model_validate(spec), 0)
    labels = {
        "app.kubernetes.io/name": "swell-worker",
        "app.kubernetes.io/instance": DEPLOYMENTS[KEDA_SIDE],
        SIDE_LABEL: KEDA_SIDE,
    }
    rendered["metadata"]["labels"] = labels
    rendered["spec"]["selector"] = {"matchLabels": {SIDE_LABEL: KEDA_SIDE}}
    rendered["spec"]["template"]["metadata"]["labels"] = dict(labels)
    return rendered


def scaled_object(redis_address: str) -> dict[str, Any]:
    common = {"address": redis_address, "stream": STREAMS[KEDA_SIDE], "consumerGroup": GROUP}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": DEPLOYMENTS[KEDA_SIDE]},
        "spec": {
            "scaleTargetRef": {"name": DEPLOYMENTS[KEDA_SIDE]},
            "pollingInterval": KEDA_POLLING_SECONDS,
            "cooldownPeriod": KEDA_COOLDOWN_SECONDS,
            "minReplicaCount": 0,
            "maxReplicaCount": MAX_REPLICAS,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": KEDA_SCALE_DOWN_WINDOW_SECONDS}}
                }
            },
            "triggers": [
                {
                    "type": "redis-streams",
                    "name": "backlog",
                    "metadata": {**common, "lagCount": str(KEDA_LAG_PER_POD), "activationLagCount": "0"},
                },
                {
                    "type": "redis-streams",
                    "name": "in-flight",
                    "metadata": {**common, "pendingEntriesCount": str(KEDA_PENDING_PER_POD)},
                },
            ],
        },
    }


def deploy_pools(stack: KindStack, log: Callable[[str], None], *, with_keda: bool, scaling: Mapping[str, Any]) -> None:
    redis_url = stack.redis_url_in_cluster
    stack.kubectl(
        "create", "secret", "generic", "redis", f"--from-literal=url={redis_url}", "-n", stack.namespace, check=False
    )
    pool = worker_pool(stack.images.worker, scaling)
    stack.apply([keda_deployment(pool), pool])
    if not with_keda:
        log("WorkerPool applied; no KEDA (--without-keda): the KEDA Deployment stays at zero")
        return
    stack.apply(scaled_object(f"redis.{stack.namespace}.svc:6379"))
    stack.kubectl(
        "wait",
        "--for=condition=Ready",
        f"scaledobject/{DEPLOYMENTS[KEDA_SIDE]}",
        "-n",
        stack.namespace,
        "--timeout=300s",
        timeout=320,
    )
    log("ScaledObject Ready, WorkerPool applied")


# --- the run ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Sample:
    t: float
    spec: dict[str, int]
    ready: dict[str, int]
    pods: dict[str, int]
    stream: dict[str, dict[str, int]]


@dataclasses.dataclass
class PodLife:
    side: str
    created: float
    ready: float | None = None
    gone: float | None = None


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class Sampler:
    """Every second: both Deployments, their pods, and both streams as KEDA's triggers read them."""

    def __init__(self, kubeconfig: Path, redis: Any, namespace: str) -> None:
        self._kubeconfig = kubeconfig
        self._redis = redis
        self._namespace = namespace
        self.samples: list[Sample] = []
        self.pods: dict[str, PodLife] = {}

    async def run(self, t0: float, stop: asyncio.Event) -> None:
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(self._kubeconfig), client_configuration=configuration)
        async with client.ApiClient(configuration=configuration) as api:
            apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
            next_tick = time.time()
            while not stop.is_set():
                await self._sample(apps, core, t0)
                next_tick += 1.0
                await asyncio.sleep(max(0.0, next_tick - time.time()))

    async def _sample(self, apps: Any, core: Any, t0: float) -> None:
        now = time.time()
        deployments, pods, streams = await asyncio.gather(
            apps.list_namespaced_deployment(self._namespace),
            core.list_namespaced_pod(self._namespace, label_selector=SIDE_LABEL),
            self._streams(),
        )
        by_name = {d.metadata.name: d for d in deployments.items}
        spec = {
            side: int(by_name[name].spec.replicas or 0) if name in by_name else 0 for side, name in DEPLOYMENTS.items()
        }
        ready = {
            side: int(by_name[name].status.ready_replicas or 0) if name in by_name else 0
            for side, name in DEPLOYMENTS.items()
        }
        counts = {side: 0 for side in DEPLOYMENTS}
        alive: set[str] = set()
        for pod in pods.items:
            side = pod.metadata.labels.get(SIDE_LABEL)
            if side not in counts or pod.status.phase in ("Succeeded", "Failed"):
                continue
            counts[side] += 1
            alive.add(pod.metadata.uid)
            life = self.pods.setdefault(pod.metadata.uid, PodLife(side, _epoch(pod.metadata.creation_timestamp) - t0))
            for condition in pod.status.conditions or []:
                if condition.type == "Ready" and condition.status == "True" and life.ready is None:
                    life.ready = _epoch(condition.last_transition_time) - t0
        for uid, life in self.pods.items():
            if uid not in alive and life.gone is None:
                life.gone = now - t0
        self.samples.append(Sample(round(now - t0, 2), spec, ready, counts, streams))

    async def _streams(self) -> dict[str, dict[str, int]]:
        seen: dict[str, dict[str, int]] = {}
        for side, stream in STREAMS.items():
            length = int(await self._redis.xlen(stream))
            groups = await self._redis.xinfo_groups(stream)
            group: dict[str, Any] = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), {})
            lag = group.get("lag")
            seen[side] = {
                "length": length,
                "pending": int(group.get("pending") or 0),
                "lag": -1 if lag is None else int(lag),
            }
        return seen


async def drive(redis_url: str, trace: list[tuple[float, float]], t0: float) -> dict[str, dict[str, float]]:
    """Submits each task of the trace to both streams at its arrival instant; returns submit times by id."""
    from swell_worker.client import SwellClient

    clients = {
        side: SwellClient.for_redis(redis_url, stream, backend="redis-streams", group=GROUP)
        for side, stream in STREAMS.items()
    }
    submitted: dict[str, dict[str, float]] = {side: {} for side in STREAMS}
    try:
        for index, (arrival, seconds) in enumerate(trace):
            delay = t0 + arrival - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for side, swell in clients.items():
                task_id = f"{side}-{int(t0)}-{index:05d}"  # fresh ids: a rerun must not hit the idempotency keys
                submitted[side][task_id] = time.time()
                await swell.submit("sleep", {"seconds": seconds, "incr": side}, task_id=task_id)
    finally:
        for swell in clients.values():
            await swell.close()
    return submitted


async def reset_redis(redis: Any) -> None:
    """Empty streams with their group at the start, so KEDA's triggers read 0 (not an error) before any task."""
    for side, stream in STREAMS.items():
        await redis.delete(stream, f"swell:effects:{side}")
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)


async def run_trace(
    stack: KindStack, trace: list[tuple[float, float]], log: Callable[[str], None], *, scaled: tuple[str, ...]
) -> dict[str, Any]:
    import redis.asyncio as aioredis
    from swell_worker.client import SwellClient

    with stack.port_forward("redis", 6379) as port:
        redis_url = f"redis://127.0.0.1:{port}/0"
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        await reset_redis(redis)
        await wait_for_zero(stack, log)
        sampler = Sampler(stack.kubeconfig, redis, stack.namespace)
        stop = asyncio.Event()
        t0 = time.time() + 2.0
        sampling = asyncio.create_task(sampler.run(t0, stop))
        log(f"driving {len(trace)} tasks into each stream for {trace[-1][0]:.0f} s")
        submitted = await drive(redis_url, trace, t0)
        log("trace submitted; waiting for both pools to drain and return to zero")
        deadline = time.time() + TAIL_CAP_SECONDS
        while time.time() < deadline:
            await asyncio.sleep(5)
            last = sampler.samples[-1]
            done = all(last.stream[side]["length"] == 0 and last.pods[side] == 0 for side in scaled)
            if done:
                break
        await asyncio.sleep(2)
        stop.set()
        await sampling
        finished: dict[str, dict[str, float | None]] = {side: {} for side in STREAMS}
        states: dict[str, dict[str, int]] = {side: {} for side in STREAMS}
        for side, stream in STREAMS.items():
            async with SwellClient.for_redis(redis_url, stream, backend="redis-streams", group=GROUP) as swell:
                for task_id in submitted[side]:
                    status = await swell.status(task_id)
                    states[side][status.state] = states[side].get(status.state, 0) + 1
                    finished[side][task_id] = status.updated_at if status.state == "succeeded" else None
        effects = {side: await redis.hgetall(f"swell:effects:{side}") for side in STREAMS}
        await redis.aclose()
    return {
        "t0": t0,
        "samples": sampler.samples,
        "pods": sampler.pods,
        "submitted": submitted,
        "finished": finished,
        "states": states,
        "effects": effects,
    }


async def wait_for_zero(stack: KindStack, log: Callable[[str], None]) -> None:
    """Both pools at zero with no pod left (a rerun starts from the same place as the first run)."""
    for _ in range(120):
        pods = stack.json("pods", "-l", SIDE_LABEL)["items"]
        replicas = [int(stack.json("deployment", name)["spec"].get("replicas") or 0) for name in DEPLOYMENTS.values()]
        if not pods and not any(replicas):
            return
        await asyncio.sleep(5)
    log("warning: the pools did not reach zero before the run")


# --- analysis ---------------------------------------------------------------------------------------------
def integrate(samples: list[Sample], side: str, field: str) -> float:
    """Replica-seconds from the 1 s samples (each value held until the next sample)."""
    total = 0.0
    for here, after in itertools.pairwise(samples):
        total += getattr(here, field)[side] * (after.t - here.t)
    return total


def summarise_waits(waits: list[float]) -> dict[str, float]:
    return {
        "p50_s": round(percentile(waits, 0.50), 2),
        "p95_s": round(percentile(waits, 0.95), 2),
        "p99_s": round(percentile(waits, 0.99), 2),
        "max_s": round(max(waits), 2) if waits else math.nan,
        "mean_s": round(statistics.fmean(waits), 2) if waits else math.nan,
    }


def model_keda() -> KedaHpa:
    """bench/policy's KEDA+HPA model with this run's ScaledObject; the in-flight trigger and
    minReplicaCount only where the model has them (a model without them is reported as such)."""
    settings: dict[str, Any] = {
        "name": "keda-expert",
        "polling_interval": float(KEDA_POLLING_SECONDS),
        "cooldown_period": float(KEDA_COOLDOWN_SECONDS),
        "list_length": float(KEDA_LAG_PER_POD),
        "scale_down_window": float(KEDA_SCALE_DOWN_WINDOW_SECONDS),
    }
    fields = {f.name for f in dataclasses.fields(KedaHpa)}
    if "pending_entries" in fields:
        settings["pending_entries"] = float(KEDA_PENDING_PER_POD)
    if "min_replica_count" in fields:
        settings["min_replica_count"] = 0
    return KedaHpa(CONCURRENCY, MAX_REPLICAS, **settings)


def model_swell(scaling: Mapping[str, Any] = SWELL_SCALING) -> Swell:
    """The simulator's Swell with the WorkerPool's scaling settings (this bench's where the pool omits one)."""
    settings = {**SWELL_SCALING, **scaling}
    return Swell(
        CONCURRENCY,
        MAX_REPLICAS,
        task_seconds_hint=float(settings["taskSecondsHint"]),
        target_wait_seconds=float(settings["targetWaitSeconds"]),
        idle_seconds_before_zero=float(settings["idleSecondsBeforeZero"]),
        scale_down_stabilization_seconds=float(settings["scaleDownStabilizationSeconds"]),
    )


def analyse(run: dict[str, Any], trace: list[tuple[float, float]], scaling: Mapping[str, Any]) -> dict[str, Any]:
    samples: list[Sample] = run["samples"]
    lives: dict[str, PodLife] = run["pods"]
    sides: dict[str, Any] = {}
    for side in STREAMS:
        waits = [
            max(0.0, finished - run["submitted"][side][task_id] - trace[int(task_id.rsplit("-", 1)[1])][1])
            for task_id, finished in run["finished"][side].items()
            if finished is not None
        ]
        starts = [life.ready - life.created for life in lives.values() if life.side == side and life.ready is not None]
        effects = run["effects"][side]
        sides[side] = {
            "replica_seconds_pods": round(integrate(samples, side, "pods"), 1),
            "replica_seconds_ready": round(integrate(samples, side, "ready"), 1),
            "replica_seconds_spec": round(integrate(samples, side, "spec"), 1),
            "max_pods": max(s.pods[side] for s in samples),
            "pods_started": sum(1 for life in lives.values() if life.side == side),
            "pod_start_to_ready_s": summarise_waits(starts) if starts else None,
            "tasks": len(run["submitted"][side]),
            "task_states": run["states"][side],
            "effects_recorded": len(effects),
            "effects_recorded_twice": sum(1 for count in effects.values() if int(count) > 1),
            "wait": summarise_waits(waits),
            "waits_sorted": sorted(round(w, 3) for w in waits),
        }
    starts = [life.ready - life.created for life in lives.values() if life.ready is not None]
    startup = statistics.median(starts) if starts else 10.0
    bound = sum(seconds for _, seconds in trace) / CONCURRENCY
    models: dict[str, Any] = {}
    for side, scaler, drain_idle_first in ((KEDA_SIDE, model_keda(), False), (SWELL_SIDE, model_swell(scaling), True)):
        result = simulate(
            trace, scaler, concurrency=CONCURRENCY, startup_seconds=startup, drain_idle_first=drain_idle_first
        )
        real = sides[side]["replica_seconds_pods"]
        models[side] = {
            "model": scaler.name,
            "model_settings": {
                k: v
                for k, v in ((f.name, getattr(scaler, f.name)) for f in dataclasses.fields(scaler))
                if not k.startswith("_") and isinstance(v, int | float | str | type(None))
            },
            "replica_seconds": round(result.replica_seconds, 1),
            "replica_seconds_error_vs_real": round(result.replica_seconds / real - 1.0, 3) if real else None,
            "within_15_percent": bool(real) and abs(result.replica_seconds / real - 1.0) <= 0.15,
            "wait": summarise_waits(result.waits),
            "waits_sorted": sorted(round(w, 3) for w in result.waits),
        }
    return {
        "sides": sides,
        "models": models,
        "model_pod_startup_seconds": round(startup, 2),
        "lower_bound_replica_seconds": round(bound, 1),
    }


# --- the models against the committed run ------------------------------------------------------------------
MODEL_BOUND = 0.15  # issue 13: a model lands within 15 % of the real replica-seconds, or is fixed


def recorded_trace(report: dict[str, Any], side: str = SWELL_SIDE) -> Trace:
    """The trace as it was submitted. The driver submits in trace order and fell behind where the rate
    outran it; where ``side`` had no ready pod and nothing in flight, nothing consumed its stream, so the
    growth of its length between two samples is what was submitted then. Each such task gets the later
    of its planned instant and its share of that interval; a task the stream had not shown by the last
    such sample came after it; every later task keeps the order."""
    nominal = nominal_trace(report)
    times = [t for t, _ in nominal]
    samples = report["timeline"]

    def quiet(sample: dict[str, Any]) -> bool:
        return bool(sample["t"] >= 0 and sample["ready"][side] == 0 and sample["stream"][side]["pending"] == 0)

    j = 0
    while j < len(samples):
        if not quiet(samples[j]):
            j += 1
            continue
        index = sum(1 for t in times if t < samples[j]["t"])  # caught up when the window opens
        while j + 1 < len(samples) and quiet(samples[j + 1]):
            before, after = samples[j], samples[j + 1]
            grown = after["stream"][side]["length"] - before["stream"][side]["length"]
            for k in range(max(grown, 0)):
                if index < len(times):
                    times[index] = max(times[index], before["t"] + (after["t"] - before["t"]) * (k + 1) / grown)
                    index += 1
            j += 1
        if index < len(times):  # what the stream did not show by the window's last sample came after it
            times[index] = max(times[index], samples[j]["t"] + 1e-6)
        j += 1
    for i in range(1, len(times)):
        times[i] = max(times[i], times[i - 1])
    return [(t, seconds) for t, (_, seconds) in zip(times, nominal, strict=True)]


def task_overhead_seconds(report: dict[str, Any], trace: Trace) -> float:
    """Slot time per task beyond its sleep: from the first stretch in which a pool ran all its replicas
    ready with a backlog (every slot busy), tasks completed = what left the stream + what arrived, and
    slots x seconds / completed is a task's slot time. The mean over both pools, less the mean sleep."""
    samples = report["timeline"]
    per_task: list[float] = []
    for side in STREAMS:
        full = [s["ready"][side] == MAX_REPLICAS and s["stream"][side]["lag"] > 0 for s in samples]
        if True not in full:
            continue
        first = full.index(True)
        last = first
        while last + 1 < len(samples) and full[last + 1]:
            last += 1
        start, end = samples[first], samples[last]
        arrived = sum(1 for t, _ in trace if start["t"] < t <= end["t"])
        done = start["stream"][side]["length"] - end["stream"][side]["length"] + arrived
        if done > 0:
            per_task.append(MAX_REPLICAS * CONCURRENCY * (end["t"] - start["t"]) / done)
    mean_sleep = statistics.fmean(seconds for _, seconds in trace)
    return max(statistics.fmean(per_task) - mean_sleep, 0.0) if per_task else 0.0


def decision_at(commit: str) -> types.ModuleType:
    """operator/swell_operator/decision.py as of ``commit``, loaded as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:operator/swell_operator/decision.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"swell_operator_decision_{commit[:12]}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"decision.py@{commit[:12]}", "exec"), module.__dict__)
    return module


def results_commit(path: Path) -> str:
    """The commit that last wrote the committed result file."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%H", "--", str(path.relative_to(ROOT))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def compare_recorded(
    report: dict[str, Any], decision: types.ModuleType | None = None, overhead: float | None = None
) -> dict[str, Any]:
    """Both models on the committed run's trace as submitted, against the replica-seconds it recorded.
    ``overhead``: a task's slot time beyond its sleep (None: measured from the run)."""
    submitted = recorded_trace(report)
    if overhead is None:
        overhead = task_overhead_seconds(report, submitted)
    trace = [(t, seconds + overhead) for t, seconds in submitted]
    startup = float(report["model_pod_startup_seconds"])
    rows: dict[str, Any] = {}
    for side in STREAMS:
        scaler: KedaHpa | Swell = (
            model_keda() if side == KEDA_SIDE else model_swell(report["worker_pool"].get("scaling", {}))
        )
        if isinstance(scaler, Swell) and decision is not None:
            scaler.decision = decision
        timeline: list[tuple[float, int, int, int]] = []
        result = simulate(
            trace,
            scaler,
            concurrency=CONCURRENCY,
            startup_seconds=startup,
            drain_idle_first=side == SWELL_SIDE,
            timeline=timeline,
        )
        real = float(report["sides"][side]["replica_seconds_pods"])
        error = result.replica_seconds / real - 1.0
        # What the Deployment asked for, apart from pods that outlived it (draining, or cut while starting).
        spec = sum(here[1] * (after[0] - here[0]) for here, after in itertools.pairwise(timeline))
        real_spec = float(report["sides"][side]["replica_seconds_spec"])
        rows[side] = {
            "real_replica_seconds": real,
            "model_replica_seconds": round(result.replica_seconds, 1),
            "error": round(error, 3),
            "real_spec_replica_seconds": real_spec,
            "model_spec_replica_seconds": round(spec, 1),
            "spec_error": round(spec / real_spec - 1.0, 3) if real_spec else None,
            "within_bound": abs(error) <= MODEL_BOUND,
            "real_wait_p95_s": report["sides"][side]["wait"]["p95_s"],
            "model_wait": summarise_waits(result.waits),
            "model_scaling_actions": result.scaling_actions,
            "model_timeline": [(round(t, 1), spec, ready, pods) for t, spec, ready, pods in timeline],
        }
    rows[KEDA_SIDE]["over_loop_phases"] = keda_over_loop_phases(trace, startup, rows[KEDA_SIDE]["real_replica_seconds"])
    return {
        "trace_tasks": len(trace),
        "tasks_submitted_late_by_over_1s": sum(
            1 for (t, _), (n, _) in zip(submitted, nominal_trace(report), strict=True) if t - n > 1.0
        ),
        "task_overhead_seconds": round(overhead, 3),
        "pod_startup_seconds": startup,
        "bound": MODEL_BOUND,
        "models": rows,
    }


def keda_over_loop_phases(trace: Trace, startup: float, real: float) -> dict[str, Any]:
    """The KEDA model at ``KEDA_LOOP_PHASES`` phases of its loops: the range a run of unknown phase falls in."""
    replica_seconds, p95 = [], []
    for k in range(KEDA_LOOP_PHASES):
        scaler = dataclasses.replace(model_keda(), phase=k / KEDA_LOOP_PHASES)
        result = simulate(trace, scaler, concurrency=CONCURRENCY, startup_seconds=startup, drain_idle_first=False)
        replica_seconds.append(round(result.replica_seconds, 1))
        p95.append(round(percentile(result.waits, 0.95), 2))
    return {
        "phases": KEDA_LOOP_PHASES,
        "replica_seconds": replica_seconds,
        "wait_p95_s": p95,
        "mean_replica_seconds": round(statistics.mean(replica_seconds), 1),
        "mean_error": round(statistics.mean(replica_seconds) / real - 1.0, 3),
        "real_within_range": min(replica_seconds) <= real <= max(replica_seconds),
    }


def compare_recorded_main(path: Path, out: Path) -> int:
    report = json.loads(path.read_text())
    commit = results_commit(path)
    decision = decision_at(commit) if commit else None
    comparison = compare_recorded(report, decision)
    # How much the measured per-task time moves the result: the same comparison without it.
    plain = compare_recorded(report, decision, overhead=0.0)
    comparison["error_without_task_overhead"] = {side: row["error"] for side, row in plain["models"].items()}
    comparison = {
        "name": "keda_side_by_side_model",
        "command": f"{COMMAND} --compare-recorded {path.relative_to(ROOT)}",
        "recorded": str(path.relative_to(ROOT)),
        "swell_decision_commit": commit or None,
        **comparison,
    }
    out.write_text(json.dumps(comparison, indent=1) + "\n")
    for side, row in comparison["models"].items():
        print(
            f"{side:6} real {row['real_replica_seconds']:>7.0f} replica-s  model {row['model_replica_seconds']:>7.0f}"
            f"  error {row['error']:+.1%}  within {MODEL_BOUND:.0%}: {row['within_bound']}"
        )
        if "over_loop_phases" in row:
            spread = row["over_loop_phases"]
            print(
                f"{'':6} over {spread['phases']} loop phases: {min(spread['replica_seconds']):.0f}-"
                f"{max(spread['replica_seconds']):.0f} replica-s (mean error {spread['mean_error']:+.1%}), "
                f"p95 {min(spread['wait_p95_s']):.1f}-{max(spread['wait_p95_s']):.1f} s"
            )
    print(f"wrote {out}")
    return 0


def plot(run: dict[str, Any], analysis: dict[str, Any], trace: list[tuple[float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples: list[Sample] = run["samples"]
    colours = {KEDA_SIDE: "tab:red", SWELL_SIDE: "tab:blue"}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8))
    times = [s.t for s in samples]
    for side in STREAMS:
        sides = analysis["sides"][side]
        top.step(
            times,
            [s.pods[side] for s in samples],
            where="post",
            color=colours[side],
            lw=1.4,
            label=f"{side}: pods ({sides['replica_seconds_pods']:.0f} replica-s)",
        )
        top.step(
            times,
            [s.ready[side] for s in samples],
            where="post",
            color=colours[side],
            lw=0.8,
            ls=":",
            label=f"{side}: ready",
        )
    load = top.twinx()
    width = 10.0
    bins = [i * width for i in range(int(max((t for t, _ in trace), default=0.0) / width) + 1)]
    counts = [sum(1 for t, _ in trace if b <= t < b + width) / width for b in bins]
    load.fill_between(bins, counts, step="post", color="grey", alpha=0.2)
    load.set_ylabel("arrivals / s (each stream)")
    top.set_xlabel("seconds")
    top.set_ylabel("replicas")
    top.set_title("Real KEDA v2.21.0 (expert settings) and Swell on one kind cluster, same trace")
    top.legend(fontsize=8, loc="upper left")
    for side in STREAMS:
        real = analysis["sides"][side]["waits_sorted"]
        model = analysis["models"][side]["waits_sorted"]
        for waits, style, what in ((real, "-", "real"), (model, "--", f"model {analysis['models'][side]['model']}")):
            if waits:
                bottom.plot(
                    waits,
                    [(i + 1) / len(waits) for i in range(len(waits))],
                    ls=style,
                    color=colours[side],
                    label=f"{side} {what}: p95 {percentile(waits, 0.95):.1f} s",
                )
    bottom.set_xscale("symlog", linthresh=1.0)
    bottom.set_xlabel("queue wait (s), submit to start")
    bottom.set_ylabel("share of tasks")
    bottom.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-scale", type=float, default=1.0, help="< 1 shortens the trace (smoke runs only)")
    parser.add_argument(
        "--without-keda", action="store_true", help="smoke-run the harness where KEDA is not built (no result)"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--target-wait-seconds",
        type=float,
        default=float(SWELL_SCALING["targetWaitSeconds"]),
        help="the WorkerPool's scaling.targetWaitSeconds (its default: 30)",
    )
    parser.add_argument(
        "--service-times",
        choices=SERVICE_TIMES,
        default="uniform",
        help="the sleep handler's times: uniform 0.5-2 s, or bench/policy's heavy-tailed lognormal",
    )
    parser.add_argument(
        "--compare-recorded",
        type=Path,
        nargs="?",
        const=RESULTS / "keda_side_by_side.json",
        default=None,
        metavar="RUN_JSON",
        help="no cluster: the simulator's models against a committed run (bench/results/keda_side_by_side.json)",
    )
    args = parser.parse_args(argv)
    if args.compare_recorded is not None:
        return compare_recorded_main(args.compare_recorded.resolve(), args.out_dir / "keda_side_by_side_model.json")
    out: Path = args.out_dir

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    began = time.monotonic()
    trace = make_trace(args.seed, args.time_scale, args.service_times)
    scaling = {**SWELL_SCALING, "targetWaitSeconds": args.target_wait_seconds}
    images, build_seconds = ([], math.nan) if args.without_keda else build_keda(log)
    stack = bring_up(images, log)
    if not args.without_keda:
        deploy_keda(stack, log)
    deploy_pools(stack, log, with_keda=not args.without_keda, scaling=scaling)
    scaled = (SWELL_SIDE,) if args.without_keda else (KEDA_SIDE, SWELL_SIDE)
    run = asyncio.run(run_trace(stack, trace, log, scaled=scaled))
    analysis = analyse(run, trace, scaling)
    report = {
        "name": "keda_side_by_side",
        "command": recorded_command(argv),
        "machine": platform.platform(),
        "keda": {
            "version": KEDA_VERSION,
            "go_build_seconds": build_seconds,
            "images": images,
            "deployed_with": "bench/keda/keda.yaml + CRDs from the module's config/crd/bases",
            "scaled_object": scaled_object(f"redis.{NAMESPACE}.svc:6379")["spec"],
        },
        "worker_pool": worker_pool(stack.images.worker, scaling)["spec"],
        "trace": {
            "seed": args.seed,
            "seconds": TRACE_SECONDS * args.time_scale,
            "tasks_per_stream": len(trace),
            "phases": PHASES,
            "service_times": args.service_times,
            "service_seconds": {"uniform": SERVICE_RANGE}
            if args.service_times == "uniform"
            else {
                "lognormal_median": LOGNORMAL_MEDIAN_SECONDS,
                "lognormal_sigma": LOGNORMAL_SIGMA,
                "cap": SERVICE_CAP_SECONDS,
            },
            "busy_seconds": round(sum(s for _, s in trace), 1),
        },
        "concurrency_per_pod": CONCURRENCY,
        "max_replicas": MAX_REPLICAS,
        "sampled_seconds": samples_span(run["samples"]),
        **analysis,
        "timeline": [dataclasses.asdict(s) for s in run["samples"]],
        "runtime_seconds": round(time.monotonic() - began, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    plot(run, analysis, trace, out / "keda_side_by_side.png")
    for side in STREAMS:  # the CDFs are in the plot; the JSON keeps the summaries
        report["sides"][side].pop("waits_sorted")
        report["models"][side].pop("waits_sorted")
    (out / "keda_side_by_side.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"\nwrote {out}/keda_side_by_side.json and .png ({report['runtime_seconds']} s)")
    return 0


def recorded_command(argv: list[str] | None) -> str:
    """The command line that reproduces this run; ``None`` is a run from the shell (``sys.argv``)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join([COMMAND, *args])


def samples_span(samples: list[Sample]) -> float:
    return round(samples[-1].t - samples[0].t, 1) if samples else 0.0


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{'':8} {'replica-s':>10} {'model':>8} {'error':>7} {'p50 s':>7} {'p95 s':>7} {'model p95':>9} "
        f"{'tasks':>6} {'done':>6}"
    ]
    for side in STREAMS:
        real, model = report["sides"][side], report["models"][side]
        error = model["replica_seconds_error_vs_real"]
        lines.append(
            f"{side:8} {real['replica_seconds_pods']:>10.0f} {model['replica_seconds']:>8.0f} "
            f"{(error if error is not None else math.nan):>+7.1%} {real['wait']['p50_s']:>7.2f} "
            f"{real['wait']['p95_s']:>7.2f} {model['wait']['p95_s']:>9.2f} {real['tasks']:>6} "
            f"{real['task_states'].get('succeeded', 0):>6}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
