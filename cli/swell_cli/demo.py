"""``swell demo``: the whole product on one machine in a few minutes, as a user runs it.

By default a kind cluster: the worker and operator images built from the Dockerfile, the Helm chart,
Redis (AOF) and a shared vector store as in-cluster Deployments, and a WorkerPool of bundled workers
running the real index/search handlers in real containers. Where Docker cannot run, it says why and
falls back to the local control plane (built from Go modules; kwok nodes), where the pod runner runs the
operator's and the workers' pods as local processes. Either way a burst of short documents goes into
the queue; the terminal shows depth, in-flight, desired and ready replicas and throughput each second
until the pool is back at zero; then a summary that names the path that ran, a search through
``call()``, and a plot.

Run from the repository root (``make demo``): the cluster tooling lives in ``tests/tooling``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

NAMESPACE = "swell-demo"
POOL = "docs"
STREAM = "docs"
DOCS_PER_TASK = 4
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = ROOT / "demo-output"

SUBJECTS = [
    "the queue",
    "a worker pod",
    "the embedding model",
    "the vector index",
    "Redis",
    "the operator",
    "a burst of traffic",
    "the scheduler",
    "a retry",
    "the dead-letter stream",
    "an idle replica",
    "the control plane",
]
VERBS = [
    "drains",
    "wakes",
    "indexes",
    "scales out",
    "waits for",
    "acknowledges",
    "retries",
    "embeds",
    "searches",
    "watches",
    "balances",
    "hands back",
]
OBJECTS = [
    "thousands of documents",
    "the backlog",
    "a search query",
    "every task exactly once",
    "the last replica",
    "its in-flight work",
    "a sentence about cats",
    "the morning's invoices",
    "product reviews",
    "support tickets",
    "news headlines",
    "recipes for bread",
]


def documents(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Short, varied, reproducible documents; a few distinctive ones for the final search."""
    rng = random.Random(seed)
    docs = [
        {
            "id": f"doc-{i}",
            "text": f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} (note {i}).",
            "metadata": {"n": i},
        }
        for i in range(count)
    ]
    docs[count // 2]["text"] = "Sourdough bread needs a lively starter, flour, water and a long, slow rise."
    return docs


def log(message: str) -> None:
    print(f"[swell demo] {message}", flush=True)


KUBECTL = ["kubectl"]  # replaced by the cluster's own kubectl once it is up


def kubectl(kubeconfig: Path, *args: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [*KUBECTL, "--kubeconfig", str(kubeconfig), *args], input=input, text=True, capture_output=True, timeout=120
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def pool_manifest(vector_uri: str | None, *, local: bool) -> dict[str, Any]:
    """The demo's WorkerPool: real containers on kind; on the local control plane, pods run as processes."""
    worker: dict[str, Any] = {
        "handlers": ["index", "search"],
        "terminationGracePeriodSeconds": 30,
        "env": [{"name": "SWELL_MODEL_THREADS", "value": "1"}, {"name": "SWELL_VECTOR_COLLECTION", "value": "demo"}],
    }
    if vector_uri is not None:  # on kind the chart's default in-cluster store serves the pool
        worker["vectorUri"] = vector_uri
    if local:
        worker["podTemplate"] = {
            "metadata": {
                "annotations": {"swell.dev/run-locally": "true", "swell.dev/local-port-env": "SWELL_HTTP_PORT"}
            }
        }
    return {
        "apiVersion": "swell.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": POOL, "namespace": NAMESPACE},
        "spec": {
            "queue": {
                "backend": "redis-streams",
                "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
                "streams": {"streams": [STREAM]},
            },
            "concurrency": 4,
            "replicas": {"min": 0, "max": 6},
            "scaling": {"targetWaitSeconds": 10, "idleSecondsBeforeZero": 15, "scaleDownStabilizationSeconds": 15},
            "worker": worker,
        },
    }


def pool_status(kubeconfig: Path) -> dict[str, Any]:
    out = kubectl(kubeconfig, "get", "wp", POOL, "-n", NAMESPACE, "-o", "json", check=False)
    return dict(json.loads(out).get("status", {})) if out else {}


async def burst_and_watch(redis_url: str, kubeconfig: Path, count: int, timeout: float) -> dict[str, Any]:
    from swell_worker.client import SwellClient

    docs = documents(count)
    samples: list[dict[str, float]] = []
    async with SwellClient.for_redis(redis_url, STREAM, backend="redis-streams") as client:
        started = time.monotonic()
        submitted: dict[str, float] = {}
        for i in range(0, len(docs), DOCS_PER_TASK):
            task_id = await client.submit("index", {"documents": docs[i : i + DOCS_PER_TASK]})
            submitted[task_id] = time.time()
        log(f"submitted {len(submitted)} index tasks ({len(docs)} documents) in {time.monotonic() - started:.1f}s")
        print(
            f"{'t':>5} {'backlog':>8} {'in-flight':>9} {'desired':>8} {'ready':>6} {'done':>6} {'tasks/s':>8}  reason"
        )
        finished: dict[str, float] = {}
        last_done, last_t, saw_work_done_at = 0, 0.0, None
        while time.monotonic() - started < timeout:
            await asyncio.sleep(1.0)
            t = time.monotonic() - started
            for task_id in [i for i in submitted if i not in finished]:
                state = await client.status(task_id)
                if state.state == "succeeded":
                    finished[task_id] = state.updated_at or time.time()
            status = pool_status(kubeconfig)
            ready, desired = int(status.get("readyReplicas") or 0), int(status.get("desiredReplicas") or 0)
            rate = (len(finished) - last_done) / (t - last_t)
            last_done, last_t = len(finished), t
            samples.append(
                {
                    "t": t,
                    "backlog": float(status.get("backlog") or 0),
                    "in_flight": float(status.get("inFlight") or 0),
                    "desired": desired,
                    "ready": ready,
                    "rate": rate,
                }
            )
            reason = decision_text(status.get("lastDecision"), datetime.datetime.now(datetime.UTC))[:90]
            print(
                f"{t:>5.0f} {samples[-1]['backlog']:>8.0f} {samples[-1]['in_flight']:>9.0f} {desired:>8} "
                f"{ready:>6} {len(finished):>6} {rate:>8.1f}  {reason}",
                flush=True,
            )
            if len(finished) == len(submitted) and saw_work_done_at is None:
                saw_work_done_at = t
            if saw_work_done_at is not None and desired == 0 and ready == 0:
                break
        latencies = sorted(finished[i] - submitted[i] for i in finished)
        log("searching through call() (the pool is at zero: this wakes it)")
        call_started = time.monotonic()
        hits = await client.call("search", {"query": "what does sourdough need to rise?", "k": 3}, timeout=180)
        call_seconds = time.monotonic() - call_started
    replica_seconds = sum(s["ready"] for s in samples)  # one sample per second
    return {
        "tasks": len(submitted),
        "documents": len(docs),
        "done": len(finished),
        "lost": len(submitted) - len(finished),
        "replica_seconds": replica_seconds,
        "p95_seconds_to_result": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
        "peak_replicas": max((s["ready"] for s in samples), default=0),
        "back_to_zero_after_seconds": samples[-1]["t"] if samples else None,
        "search": hits,
        "search_call_seconds": round(call_seconds, 2),
        "samples": samples,
    }


def plot(samples: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    t = [s["t"] for s in samples]
    ax.fill_between(
        t,
        [s["backlog"] + s["in_flight"] for s in samples],
        color="tab:blue",
        alpha=0.25,
        label="queued + in flight (tasks)",
    )
    ax.set_ylabel("tasks")
    ax2 = ax.twinx()
    ax2.step(t, [s["desired"] for s in samples], where="post", color="tab:orange", label="desired replicas")
    ax2.step(t, [s["ready"] for s in samples], where="post", color="tab:green", label="ready replicas")
    ax2.set_ylabel("replicas")
    ax.set_xlabel("seconds since the burst")
    fig.legend(loc="upper right", fontsize=8)
    ax.set_title("swell demo: queue depth and replicas")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_demo(args: argparse.Namespace) -> int:
    """kind with the images built from the Dockerfile; the local control plane only where Docker cannot run."""
    sys.path.insert(0, str(ROOT))
    from tests.tooling.kind.cluster import KindUnavailable

    output: Path = args.output or DEFAULT_OUTPUT
    output.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    fallback_reason = "--local was given"
    summary: dict[str, Any] | None = None
    if not args.local:
        try:
            summary = _run_on_kind(args)
        except KindUnavailable as exc:
            fallback_reason = str(exc).splitlines()[0]
            log(f"kind cannot run here ({fallback_reason}); falling back to the local control plane")
    if summary is None:
        summary = _run_on_local_control_plane(args, output)
        summary["path"] = f"local control plane with the pod runner ({fallback_reason})"
    plot(summary.pop("samples"), output / "demo.png")
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"ran on: {summary['path']}")
    log(
        f"done: {summary['done']}/{summary['tasks']} tasks ({summary['documents']} documents), lost "
        f"{summary['lost']}, peak {summary['peak_replicas']} replicas, {summary['replica_seconds']:.0f} "
        f"replica-seconds, p95 submit-to-result {summary['p95_seconds_to_result']:.1f}s, back at zero after "
        f"{summary['back_to_zero_after_seconds']:.0f}s"
    )
    for hit in summary["search"]["hits"]:
        log(f"search hit {hit['score']:.3f} {hit['id']}: {hit['text']}")
    log(f"plot: {output / 'demo.png'}; summary: {output / 'summary.json'}; total {time.monotonic() - began:.0f}s")
    return 0 if summary["lost"] == 0 else 1


def _run_on_kind(args: argparse.Namespace) -> dict[str, Any]:
    from tests.tooling.stack import bring_up

    log("kind: Docker, the images from the Dockerfile, the cluster, the chart, Redis (AOF) and the vector store")
    stack = bring_up(NAMESPACE, log=log)
    KUBECTL[:] = [str(stack.cluster.kubectl)]
    kubeconfig = stack.kubeconfig
    log(f"KUBECONFIG={kubeconfig}")
    kubectl(
        kubeconfig,
        "delete",
        "workerpools.swell.dev",
        POOL,
        "-n",
        NAMESPACE,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
    )
    with stack.port_forward("redis", 6379) as port:
        _clear_queue(f"redis://127.0.0.1:{port}/0")
        kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump(pool_manifest(None, local=False)))
        _wait_for_deployment(kubeconfig)
        log(f"WorkerPool {POOL} is at 0 replicas; sending the burst")
        summary = asyncio.run(burst_and_watch(f"redis://127.0.0.1:{port}/0", kubeconfig, args.tasks, timeout=900))
    if not args.keep:
        kubectl(
            kubeconfig,
            "delete",
            "workerpools.swell.dev",
            POOL,
            "-n",
            NAMESPACE,
            "--wait=true",
            "--timeout=120s",
            check=False,
        )
    log(
        f"the kind cluster {stack.cluster.name} stays up for the next run; `kind delete cluster --name "
        f"{stack.cluster.name}` removes it"
    )
    summary["path"] = f"kind cluster {stack.cluster.name} (real containers from {stack.images.worker})"
    return summary


def _clear_queue(redis_url: str) -> None:
    """A rerun starts from an empty stream, so the burst is the only work the pool sees."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(STREAM)
    finally:
        client.close()


def _wait_for_deployment(kubeconfig: Path) -> None:
    deadline = time.monotonic() + 60
    while not kubectl(
        kubeconfig, "get", "deployment", POOL, "-n", NAMESPACE, "--ignore-not-found", "-o", "name", check=False
    ).strip():
        if time.monotonic() > deadline:
            raise RuntimeError("the operator did not create the worker Deployment within 60s")
        time.sleep(0.5)


def _run_on_local_control_plane(args: argparse.Namespace, output: Path) -> dict[str, Any]:
    from tests.fixtures.milvus import MilvusServer
    from tests.fixtures.redis_server import RedisServer
    from tests.tooling.controlplane.cluster import ensure_cluster
    from tests.tooling.controlplane.podrunner import PodRunner

    began = time.monotonic()
    log("control plane: building or reusing kube-apiserver, kcm, scheduler, etcd and kwok (cached by version)")
    cluster = ensure_cluster("swell-demo")
    kubeconfig = cluster.kubeconfig
    KUBECTL[:] = [str(cluster.kubectl)]
    log(f"cluster up ({time.monotonic() - began:.0f}s); KUBECONFIG={kubeconfig}")
    redis, milvus = RedisServer(), MilvusServer()
    redis.start()
    runner = PodRunner(kubeconfig, output / "pods").start()
    try:
        kubectl(kubeconfig, "create", "namespace", NAMESPACE, check=False)
        log("helm install swell (CRD, RBAC, operator); the operator's pod runs as a local process")
        helm = cluster.binaries["helm"]
        installed = subprocess.run(
            [
                str(helm),
                "upgrade",
                "--install",
                "swell",
                str(ROOT / "charts" / "swell"),
                "--namespace",
                NAMESPACE,
                "--set",
                f"watchNamespaces={{{NAMESPACE}}}",
                "--set",
                "replicaCount=1",
                "--set-string",
                "podAnnotations.swell\\.dev/run-locally=true",
                # A cluster kept from an older demo has the CRD from the chart's former crds/ directory.
                "--take-ownership",
                "--server-side=true",
                "--force-conflicts",
                "--kubeconfig",
                str(kubeconfig),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if installed.returncode != 0:
            raise RuntimeError(f"helm install failed: {installed.stderr.strip()}")
        kubectl(
            kubeconfig,
            "create",
            "secret",
            "generic",
            "redis",
            "-n",
            NAMESPACE,
            f"--from-literal=url={redis.url}",
            check=False,
        )
        kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump(pool_manifest(milvus.uri, local=True)))
        _wait_for_deployment(kubeconfig)
        log(f"WorkerPool {POOL} is at 0 replicas; sending the burst")
        return asyncio.run(burst_and_watch(redis.url, kubeconfig, args.tasks, timeout=900))
    finally:
        runner.stop()
        redis.stop()
        milvus.stop()
        if not args.keep:
            from tests.tooling.controlplane.cluster import delete_cluster

            delete_cluster("swell-demo")


# A decision younger than this is shown as made now; an older one as what the operator keeps holding to.
FRESH_DECISION_SECONDS = 2.0


def decision_text(last_decision: Mapping[str, Any] | None, now: datetime.datetime) -> str:
    """The Reason column: ``lastDecision`` changes only when the replicas do, so say how long it has held."""
    if not last_decision:
        return ""
    reason = str(last_decision.get("reason", ""))
    try:
        made = datetime.datetime.strptime(str(last_decision.get("time")), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return reason
    held = (now - made.replace(tzinfo=datetime.UTC)).total_seconds()
    if held < FRESH_DECISION_SECONDS:
        return reason
    return f"holding {last_decision.get('replicas', '?')} for {held:.0f}s: {reason}"
