"""How fast a WorkerPool at zero wakes: first task pushed -> Deployment spec.replicas >= 1.

Runs everything for real on this machine: a redis-server, the local control plane, the CRD and
`python -m swell_operator` as a process. Each trial starts from a pool the operator has already put
back to zero, pushes one task, and polls the Deployment every 5 ms through the API server. The
median and p95 over the trials go to bench/results/reaction_local.json (and a .png histogram).

    python bench/reaction_local.py [--trials 20] [--backend redis-streams|redis-list]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swell_operator.scaler import WAKE_POLL_SECONDS  # noqa: E402

from tests.fixtures.operator import OperatorProcess, apply_workerpool_crd  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.operator.kube import (  # noqa: E402
    apply,
    drain,
    pool_manifest,
    push_tasks,
    redis_secret,
    replicas_of,
    status_of,
    wait_for,
)

RESULTS = ROOT / "bench" / "results"
POLL_SECONDS = 0.005


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least ``fraction`` of samples at or below it."""
    ordered = sorted(samples)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))
    return ordered[rank - 1]


class ExistingCluster:
    """A cluster someone else runs, reached through its kubeconfig (``--kubeconfig``)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", *args],
            input=input,
            text=True,
            capture_output=True,
            check=check,
            timeout=timeout,
            env={**os.environ, **self.env()},
        )


@contextlib.contextmanager
def local_cluster(kubeconfig: Path | None) -> Iterator[Any]:
    if kubeconfig is not None:
        yield ExistingCluster(kubeconfig)
        return
    from tests.fixtures.cluster import Cluster
    from tests.tooling.controlplane.cluster import ensure_cluster

    # The same cluster the tests use (reused when already up, left running for the next run).
    yield Cluster.from_info(ensure_cluster(os.environ.get("SWELL_TEST_CLUSTER", "swell-test")))


@contextlib.contextmanager
def environment(kubeconfig: Path | None) -> Iterator[tuple[Any, str, RedisServer, Any]]:
    redis = RedisServer()
    redis.start()
    try:
        with local_cluster(kubeconfig) as cluster:
            namespace = f"bench-{uuid.uuid4().hex[:6]}"
            cluster.kubectl("create", "namespace", namespace)
            apply_workerpool_crd(cluster)
            redis_secret(cluster, namespace, redis.url)
            operator = OperatorProcess(cluster, namespace).wait_up()
            try:
                yield cluster, namespace, redis, operator
            finally:
                cluster.kubectl(
                    "delete", "workerpools.swell.dev", "--all", "-n", namespace, "--timeout=30s", check=False
                )
                operator.stop()
                cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    finally:
        redis.stop()


def deployment_reader(cluster: Any, namespace: str) -> Any:
    """A direct API client, so each poll costs one GET and not a kubectl process."""
    from kubernetes import client, config

    config.load_kube_config(config_file=str(cluster.kubeconfig))
    apps = client.AppsV1Api()

    def replicas() -> int:
        return int(apps.read_namespaced_deployment_scale("pool", namespace).spec.replicas or 0)

    return replicas


def run(trials: int, backend: str, kubeconfig: Path | None) -> dict[str, Any]:
    samples: list[float] = []
    with environment(kubeconfig) as (cluster, namespace, redis, operator):
        apply(
            cluster,
            namespace,
            pool_manifest(
                "pool",
                backend,
                "tasks",
                scaling={"idleSecondsBeforeZero": 0.5, "scaleDownStabilizationSeconds": 0, "pollIntervalSeconds": 1},
            ),
        )
        wait_for(lambda: replicas_of(cluster, namespace, "pool") == 0, 60, "the Deployment at zero")
        wait_for(lambda: status_of(cluster, namespace, "pool").get("lastDecision"), 60, "a first decision")
        replicas = deployment_reader(cluster, namespace)
        for trial in range(trials):
            wait_for(lambda: replicas() == 0, 60, "the pool back at zero", interval=0.05)
            # Settle into idle polling, then push at a random phase of the poll so trials are not in lockstep.
            time.sleep(1.0 + random.uniform(0, WAKE_POLL_SECONDS))
            started = time.perf_counter()
            push_tasks(redis.url, backend, "tasks", 1)
            deadline = started + 30
            while replicas() < 1:
                if time.perf_counter() > deadline:
                    raise AssertionError(f"trial {trial}: no replica within 30 s:\n{operator.log()[-4000:]}")
                time.sleep(POLL_SECONDS)
            samples.append(time.perf_counter() - started)
            print(f"trial {trial + 1}/{trials}: {samples[-1] * 1000:.0f} ms", flush=True)
            drain(redis.url, backend, "tasks")
    return {
        "name": "reaction_local",
        "what": "first task pushed to a pool at zero -> Deployment spec.replicas >= 1 (read from the API server)",
        "backend": backend,
        "cluster": "kube-apiserver reached through --kubeconfig" if kubeconfig else "tests.fixtures.cluster",
        "trials": trials,
        "samples_seconds": [round(s, 4) for s in samples],
        "median_seconds": round(statistics.median(samples), 4),
        "p95_seconds": round(percentile(samples, 0.95), 4),
        "max_seconds": round(max(samples), 4),
        "operator_idle_poll_seconds": WAKE_POLL_SECONDS,
        "poll_resolution_seconds": POLL_SECONDS,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.hist([s * 1000 for s in result["samples_seconds"]], bins=10, color="#3b7dd8")
    axes.axvline(result["median_seconds"] * 1000, color="black", linestyle="--", label="median")
    axes.axvline(result["p95_seconds"] * 1000, color="red", linestyle=":", label="p95")
    axes.set_xlabel("first task -> replicas >= 1 (ms)")
    axes.set_ylabel("trials")
    axes.set_title(f"Swell wake-from-zero latency ({result['backend']}, {result['trials']} trials)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--backend", choices=["redis-streams", "redis-list"], default="redis-streams")
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="Use this running cluster instead of starting the local control plane.",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "reaction_local.json")
    args = parser.parse_args(argv)
    result = run(args.trials, args.backend, args.kubeconfig)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"median {result['median_seconds'] * 1000:.0f} ms, p95 {result['p95_seconds'] * 1000:.0f} ms -> {args.out}")


if __name__ == "__main__":
    main()
