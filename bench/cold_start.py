"""Cold start on kind: first task pushed to a pool at zero -> first result, split into its phases.

Each trial starts with the pool at zero and no worker pod. The bench submits one ``embed`` task through
``call()`` and watches the Deployment and the pods through the API server's watch streams, stamping each
change with its own clock as it arrives (the API's condition times have one-second resolution, too coarse
here). The phases, each measured from the submit:

- operator reaction: the Deployment's ``spec.replicas`` becomes >= 1;
- pod scheduled: a worker pod has a node;
- container started: its container is running;
- worker ready: the pod is Ready (the worker answers ``/readyz`` only once the model is loaded; the
  kubelet probes every 2 s, so this can come after the task is done: a pull worker takes its task as
  soon as it runs, Ready or not);
- task done: ``call()`` returned the embedding.

The baseline, in the same run and timed the same way, is the same pool kept at one ready replica
(``replicas.min: 1``): submit -> result with nothing to start.

    python -m bench.cold_start --trials 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.operator.kube import pool_manifest, wait_for  # noqa: E402
from tests.tooling.stack import KindStack, bring_up  # noqa: E402

NAMESPACE = "swell-bench"
POOL = "coldstart"
QUEUE = "coldstart-q"
RESULTS = ROOT / "bench" / "results"
PHASES = ("operator_reaction", "pod_scheduled", "container_started", "worker_ready", "task_done")


class Watcher:
    """First arrival time of each phase, from watch streams on the pool's Deployment and pods."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        self._api = client.ApiClient(configuration=self._configuration(config, kubeconfig))
        self._apps = client.AppsV1Api(self._api)
        self._core = client.CoreV1Api(self._api)
        self.seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch_deployment, daemon=True),
            threading.Thread(target=self._watch_pods, daemon=True),
        ]

    @staticmethod
    def _configuration(config: Any, kubeconfig: Path) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        return configuration

    def start(self) -> Watcher:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()

    def _mark(self, phase: str) -> None:
        with self._lock:
            self.seen.setdefault(phase, time.monotonic())

    def _watch_deployment(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            for event in watch.Watch().stream(
                self._apps.list_namespaced_deployment,
                NAMESPACE,
                field_selector=f"metadata.name={POOL}",
                timeout_seconds=30,
            ):
                if (event["object"].spec.replicas or 0) >= 1:
                    self._mark("operator_reaction")
                if self._stop.is_set():
                    return

    def _watch_pods(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            for event in watch.Watch().stream(
                self._core.list_namespaced_pod,
                NAMESPACE,
                label_selector=f"swell.dev/workerpool={POOL}",
                timeout_seconds=30,
            ):
                pod = event["object"]
                if event["type"] == "DELETED" or pod.metadata.deletion_timestamp:
                    continue
                if pod.spec.node_name:
                    self._mark("pod_scheduled")
                if any(s.state and s.state.running for s in pod.status.container_statuses or ()):
                    self._mark("container_started")
                if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ()):
                    self._mark("worker_ready")
                if self._stop.is_set():
                    return


def pods(stack: KindStack) -> int:
    return len(stack.json("pods", "-l", f"swell.dev/workerpool={POOL}")["items"])


async def one_call(redis_url: str) -> float:
    from swell_worker.client import SwellClient

    async with SwellClient.for_redis(redis_url, QUEUE, backend="redis-streams") as client:
        started = time.monotonic()
        result = await client.call("embed", {"texts": ["a cold start, measured"]}, timeout=300)
        assert len(result["vectors"][0]) == 384, result
        return time.monotonic() - started


def apply_pool(stack: KindStack, minimum: int) -> None:
    manifest = pool_manifest(
        POOL,
        "redis-streams",
        QUEUE,
        concurrency=4,
        replicas=(minimum, 2),
        # Idle long enough for the kubelet's readiness probe (every 2 s) to mark the pod Ready before it goes.
        scaling={"idleSecondsBeforeZero": 8, "scaleDownStabilizationSeconds": 1, "pollIntervalSeconds": 0.5},
        worker={
            "handlers": ["embed"],
            "terminationGracePeriodSeconds": 10,
            "env": [{"name": "SWELL_MODEL_THREADS", "value": "1"}],
        },
    )
    stack.apply(manifest)


def cold_trials(stack: KindStack, redis_url: str, trials: int) -> list[dict[str, float]]:
    apply_pool(stack, 0)
    watcher = Watcher(stack.kubeconfig).start()
    rows = []
    try:
        for trial in range(trials):
            wait_for(lambda: pods(stack) == 0, 180, "the pool back at zero with no pod", interval=0.5)
            time.sleep(1.0)  # let the watch streams settle on the empty pool
            watcher.reset()
            started = time.monotonic()
            asyncio.run(one_call(redis_url))
            done = time.monotonic()
            # The worker takes its task as soon as it runs; the kubelet may mark it Ready a probe later.
            wait_for(lambda: all(p in watcher.seen for p in PHASES[:-1]), 30, "every phase seen", interval=0.1)
            phases = {phase: round(watcher.seen[phase] - started, 3) for phase in PHASES[:-1]}
            rows.append({**phases, "task_done": round(done - started, 3)})
            print(f"cold trial {trial + 1}/{trials}: {rows[-1]}", flush=True)
    finally:
        watcher.stop()
    return rows


def warm_trials(stack: KindStack, redis_url: str, trials: int) -> list[float]:
    apply_pool(stack, 1)
    wait_for(
        lambda: int(stack.json("deployment", POOL).get("status", {}).get("readyReplicas") or 0) >= 1,
        300,
        "one ready replica",
    )
    asyncio.run(one_call(redis_url))  # the first call after ready may still warm ONNX's arena
    results = [round(asyncio.run(one_call(redis_url)), 3) for _ in range(trials)]
    print(f"warm: {results}", flush=True)
    return results


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 3),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 3),
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2))
    previous = 0.0
    colors = dict(zip(PHASES, ["tab:purple", "tab:blue", "tab:cyan", "tab:green", "tab:orange"], strict=True))
    # In time order: the kubelet can mark a pod Ready after its worker already finished the task.
    for phase in sorted(PHASES, key=lambda p: float(report["cold"][p]["median"])):
        color, median = colors[phase], report["cold"][phase]["median"]
        ax.barh(["pool at zero"], [median - previous], left=[previous], color=color, label=phase.replace("_", " "))
        previous = median
    ax.barh(["one replica kept"], [report["warm"]["median"]], color="tab:gray", label="task done (warm)")
    ax.set_xlabel("seconds from submit (median of trials; each bar ends at that phase's median)")
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    ax.set_title(f"cold start on kind: {report['trials']} trials")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    stack = bring_up(NAMESPACE, log=lambda message: print(f"[cold_start] {message}", flush=True))
    with stack.port_forward("redis", 6379) as port:
        redis_url = f"redis://127.0.0.1:{port}/0"
        cold = cold_trials(stack, redis_url, args.trials)
        warm = warm_trials(stack, redis_url, args.trials)
    stack.kubectl("delete", "workerpools.swell.dev", POOL, "-n", NAMESPACE, "--wait=true", check=False)
    report: dict[str, Any] = {
        "name": "cold_start",
        "command": f"python -m bench.cold_start --trials {args.trials}",
        "machine": platform.platform(),
        "cores": os.cpu_count(),
        "cluster": "kind (1 control plane, 2 workers), images from the Dockerfile",
        "worker_image": stack.images.worker,
        "trials": args.trials,
        "cold": {phase: summary([row[phase] for row in cold]) for phase in PHASES},
        "warm": summary(warm),
        "cold_over_warm_median": round(statistics.median(r["task_done"] for r in cold) / statistics.median(warm), 1),
        "cold_rows": cold,
        "warm_rows": warm,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cold_start.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, RESULTS / "cold_start.png")
    print(json.dumps({k: report[k] for k in ("cold", "warm", "cold_over_warm_median")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
