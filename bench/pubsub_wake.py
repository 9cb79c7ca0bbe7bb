"""What sleeping at zero costs a Pub/Sub message: publish -> done from zero, against a worker already running.

Everything is real: the local control plane, Google's Pub/Sub emulator, redis-server for task status,
`python -m swell_operator` with its activator, and bundled workers run as local processes by the pod
runner. For each mode, each trial starts with the pool at zero (for push, its subscription pointed at
the activator), publishes one task and records publish -> Deployment replicas >= 1 and publish -> task
succeeded. The baseline runs in the same run: the same pool held at one ready worker (replicas.min 1),
publish -> task succeeded. The ratio of the two medians is the price of scaling to zero. (KEDA's
gcp-pubsub scaler reads num_undelivered_messages from Cloud Monitoring, which samples every 60 s and
shows a point up to a few minutes later; it cannot run here, so it is cited, not measured.)

    python -m bench.pubsub_wake [--trials 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import save_comparison  # noqa: E402
from tests.fixtures.cluster import Cluster  # noqa: E402
from tests.fixtures.operator import OperatorProcess, apply_workerpool_crd  # noqa: E402
from tests.fixtures.ports import free_port  # noqa: E402
from tests.fixtures.pubsub_emulator import PubSubEmulator  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.operator.kube import apply, replicas_of, wait_for  # noqa: E402
from tests.operator.pubsub_kit import (  # noqa: E402
    TOKEN,
    client_for,
    fresh_names,
    pubsub_pool,
    push_endpoint,
    secrets,
)
from tests.tooling.controlplane.cluster import ensure_cluster  # noqa: E402
from tests.tooling.controlplane.podrunner import PodRunner  # noqa: E402
from tests.tooling.controlplane.serviceproxy import ServiceProxy  # noqa: E402

SCALING = {"idleSecondsBeforeZero": 1, "scaleDownStabilizationSeconds": 0}


def until(probe: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> float:
    """Seconds until ``probe`` holds, polled every ``interval``."""
    started = time.perf_counter()
    while not probe():
        if time.perf_counter() - started > timeout:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(interval)
    return time.perf_counter() - started


@contextlib.contextmanager
def stack(mode: str) -> Iterator[dict[str, Any]]:
    """A namespace with an operator (and its activator), the emulator, Redis and the pod runner."""
    cluster = Cluster.from_info(ensure_cluster(os.environ.get("SWELL_TEST_CLUSTER", "swell-test")))
    namespace = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    apply_workerpool_crd(cluster)
    redis, emulator, runner = RedisServer(), PubSubEmulator(), PodRunner(cluster.kubeconfig).start()
    redis.start()
    port = free_port()
    activator = f"http://127.0.0.1:{port}"
    operator = OperatorProcess(
        cluster, namespace, extra_args=("--activator-port", str(port), "--activator-url", activator)
    ).wait_up()
    try:
        secrets(cluster, namespace, redis.url)
        yield {
            "cluster": cluster,
            "namespace": namespace,
            "redis": redis,
            "emulator": emulator,
            "activator": activator,
            "operator": operator,
        }
    except Exception:
        print(operator.log()[-6000:], file=sys.stderr)
        raise
    finally:
        cluster.kubectl("delete", "workerpools.swell.dev", "--all", "-n", namespace, "--timeout=30s", check=False)
        operator.stop()
        runner.stop()
        emulator.stop()
        redis.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def run_mode(mode: str, trials: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"to_replica": [], "to_done": [], "warm_to_done": []}
    with stack(mode) as env, contextlib.ExitStack() as exits:
        cluster, namespace, emulator = env["cluster"], env["namespace"], env["emulator"]
        names = fresh_names(emulator)
        workers = None
        if mode == "push":
            proxy = exits.enter_context(ServiceProxy(cluster.kubeconfig, namespace, "pool"))
            workers = f"{proxy.url}/pubsub/push"
            emulator.create(
                names["topic"],
                names["sub"],
                ack_deadline_seconds=10,
                push_config={"push_endpoint": f"{workers}?token={TOKEN}"},
            )
        else:
            emulator.create(names["topic"], names["sub"], ack_deadline_seconds=10)

        def pool(minimum: int) -> None:
            apply(
                cluster,
                namespace,
                pubsub_pool(
                    emulator,
                    names,
                    ["echo"],
                    mode=mode,
                    concurrency=2,
                    replicas=(minimum, 2),
                    scaling=SCALING,
                    push_endpoint=workers,
                ),
            )

        def asleep() -> bool:
            if replicas_of(cluster, namespace, "pool") != 0:
                return False
            pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.split()
            routed = mode == "pull" or push_endpoint(emulator, names["sub"]).startswith(env["activator"])
            return not pods and routed

        pool(0)
        client = exits.enter_context(client_for(emulator, names, env["redis"].url))

        def one(record_replica: bool) -> None:
            time.sleep(random.uniform(0, 0.5))  # a random phase against the operator's polls
            started = time.perf_counter()
            task_id = client.submit("echo", {})
            if record_replica:
                until(lambda: (replicas_of(cluster, namespace, "pool") or 0) >= 1, 60, "0 -> 1", interval=0.02)
                samples["to_replica"].append(time.perf_counter() - started)
            until(lambda: client.status(task_id).state == "succeeded", 120, "the task done", interval=0.02)
            key = "to_done" if record_replica else "warm_to_done"
            samples[key].append(time.perf_counter() - started)
            print(f"{mode} {key}: {samples[key][-1]:.2f}s", flush=True)

        for _ in range(trials):
            wait_for(asleep, 120, "the pool asleep at zero with no pods left", interval=0.2)
            time.sleep(1.0)
            one(record_replica=True)
        pool(1)  # the baseline: one worker kept running
        wait_for(lambda: not asleep() and (replicas_of(cluster, namespace, "pool") or 0) >= 1, 60, "one worker")
        if mode == "push":
            wait_for(lambda: push_endpoint(emulator, names["sub"]).startswith(workers or "-"), 60, "routed")
        time.sleep(3.0)
        one(record_replica=False)  # the first may still meet a starting worker; not counted
        samples["warm_to_done"].clear()
        for _ in range(trials):
            one(record_replica=False)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--modes", nargs="+", choices=["push", "pull"], default=["push", "pull"])
    args = parser.parse_args(argv)
    rows = []
    raw = {}
    for mode in args.modes:
        samples = run_mode(mode, args.trials)
        raw[mode] = {key: [round(s, 3) for s in values] for key, values in samples.items()}
        cold, warm = summary(samples["to_done"]), summary(samples["warm_to_done"])
        rows.append(
            {
                "system": f"{mode}: pool at zero, publish -> replicas >= 1",
                **summary(samples["to_replica"]),
                "x_baseline": None,
            }
        )
        rows.append(
            {
                "system": f"{mode}: pool at zero, publish -> task done",
                **cold,
                "x_baseline": round(cold["median"] / warm["median"], 2),
            }
        )
        rows.append(
            {"system": f"{mode}: one worker running (baseline), publish -> task done", **warm, "x_baseline": 1.0}
        )
    save_comparison(
        "pubsub_wake",
        rows,
        value="median",
        xlabel="seconds (median)",
        trials=args.trials,
        what="seconds from publishing one task to a Pub/Sub pool at zero, against the same pool with one "
        "worker running; emulator, local control plane, real operator and workers",
        keda_gcp_pubsub="Cloud Monitoring num_undelivered_messages: sampled every 60 s, visible up to a few "
        "minutes later (cloud.google.com/pubsub/docs/monitoring); KEDA pollingInterval 30 s",
        samples_seconds=raw,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    for row in rows:
        print(
            f"{row['system']}: median {row['median']:.2f}s (min {row['min']:.2f}, max {row['max']:.2f})"
            + (f", x{row['x_baseline']} the baseline" if row["x_baseline"] else "")
        )


if __name__ == "__main__":
    main()
