"""What the operator costs per pool: N idle pools, one woken at random every interval.

Everything is real: the local control plane (kwok nodes), `python -m swell_operator` as a process, and
redis-server on loopback. N WorkerPools (half Redis Streams, half Redis lists, each its own queue) sleep at
zero. After they settle, the bench measures the operator process itself (the machine is shared, so never
the machine): RSS and CPU from /proc over an idle window, and the API server's own request counters for
WorkerPool status PATCHes and all writes. Then, every ``--interval`` seconds, it pushes tasks to one random
pool's queue and times push -> Deployment replicas >= 1 (wake latency), drains the queue and lets the pool
sleep again. One more row repeats the wake test after filling the same Redis with 100 000 unrelated keys
(issue 17 §7: wake p95 within 20 % of the empty-Redis row).

    python -m bench.operator_scale [--pools 100 300 1000] [--wakes 8] [--interval 30] [--idle 60]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import RESULTS  # noqa: E402
from tests.fixtures.cluster import Cluster  # noqa: E402
from tests.fixtures.operator import OperatorProcess, apply_workerpool_crd  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.operator.kube import drain, pool_manifest, push_tasks, redis_secret, wait_for  # noqa: E402
from tests.tooling.controlplane.cluster import ensure_cluster  # noqa: E402

TARGETS = {"wake_p95_seconds": 2.0, "rss_mb": 300.0, "idle_cpu_cores": 0.1, "status_writes_per_second": 2.0}
UNRELATED_KEYS = 100_000
WAKE_TIMEOUT_SECONDS = 90.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def backend_of(index: int) -> str:
    return "redis-streams" if index % 2 == 0 else "redis-list"


def process_usage(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and RSS in MB of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS")
    )
    return cpu, rss_kb / 1024


def api_writes(cluster: Cluster) -> dict[str, int]:
    """The API server's request counters: WorkerPool status PATCHes and every write (all clients)."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=30).stdout
    counts = {"status_patches": 0, "operator_writes": 0}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, value = line.rsplit(" ", 1)
        verb = labels.split('verb="', 1)[1].split('"', 1)[0]
        resource = labels.split('resource="', 1)[1].split('"', 1)[0]
        if verb not in ("POST", "PUT", "PATCH", "DELETE", "APPLY"):
            continue
        if resource in ("workerpools", "deployments", "events"):
            counts["operator_writes"] += int(float(value))
        if resource == "workerpools" and 'subresource="status"' in labels and verb == "PATCH":
            counts["status_patches"] += int(float(value))
    return counts


def create_pools(cluster: Cluster, namespace: str, count: int) -> None:
    """N pools at zero, applied 100 to a kubectl call."""
    for start in range(0, count, 100):
        items = []
        for index in range(start, min(count, start + 100)):
            manifest = pool_manifest(f"p{index}", backend_of(index), f"q{index}", scaling={"pollIntervalSeconds": 1})
            items.append(manifest)
        cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        )


def settled(cluster: Cluster, namespace: str, count: int, quiet: bool = False) -> bool:
    """Every pool has a status that shows it healthy at zero (the others are printed when ``quiet`` is off)."""
    listed = json.loads(
        cluster.kubectl("get", "workerpools.swell.dev", "-n", namespace, "-o", "json", timeout=120).stdout
    )
    healthy = 0
    for item in listed["items"]:
        status = item.get("status") or {}
        degraded = [c for c in status.get("conditions") or () if c.get("type") == "Degraded"]
        if status.get("currentReplicas") == 0 and degraded and degraded[0].get("status") == "False":
            healthy += 1
        elif not quiet:
            print(f"    not settled: {item['metadata']['name']}: {json.dumps(status)[:400]}", flush=True)
    print(f"  {healthy}/{count} pools settled", flush=True)
    return healthy == count


@contextlib.contextmanager
def stack(count: int) -> Iterator[dict[str, Any]]:
    cluster = Cluster.from_info(ensure_cluster(os.environ.get("SWELL_TEST_CLUSTER", "swell-test")))
    namespace = f"bench-scale-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    apply_workerpool_crd(cluster)
    redis = RedisServer()
    redis.start()
    operator = None
    try:
        redis_secret(cluster, namespace, redis.url)
        create_pools(cluster, namespace, count)
        operator = OperatorProcess(cluster, namespace).wait_up(timeout=120)
        started = time.monotonic()
        try:
            wait_for(lambda: settled(cluster, namespace, count, quiet=True), 120 + count, "pools settled", interval=5)
        except AssertionError:
            settled(cluster, namespace, count)  # which ones, and how their status reads
            raise
        print(f"  every pool settled after {time.monotonic() - started:.0f}s", flush=True)
        yield {"cluster": cluster, "namespace": namespace, "redis": redis, "operator": operator}
    except Exception:
        if operator is not None:
            print(operator.log()[-6000:], file=sys.stderr)
        raise
    finally:
        if operator is not None:  # the operator releases the pools' finalizers as they go
            with contextlib.suppress(Exception):  # a slow deletion must not lose the measurements
                cluster.kubectl(
                    "delete", "workerpools.swell.dev", "--all", "-n", namespace, "--timeout=300s", timeout=330
                )
            operator.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        redis.stop()


def idle_window(cluster: Cluster, pid: int, seconds: float) -> dict[str, float]:
    """Operator CPU (cores), peak RSS and API writes per second while every pool sleeps."""
    cpu0, _ = process_usage(pid)
    writes0, t0 = api_writes(cluster), time.monotonic()
    rss_peak = 0.0
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        rss_peak = max(rss_peak, process_usage(pid)[1])
    cpu1, rss = process_usage(pid)
    writes1, elapsed = api_writes(cluster), time.monotonic() - t0
    return {
        "idle_cpu_cores": round((cpu1 - cpu0) / elapsed, 4),
        "rss_mb": round(max(rss_peak, rss), 1),
        "status_writes_per_second": round((writes1["status_patches"] - writes0["status_patches"]) / elapsed, 3),
        "writes_per_second": round((writes1["operator_writes"] - writes0["operator_writes"]) / elapsed, 3),
    }


def wake_trials(env: dict[str, Any], count: int, wakes: int, interval: float) -> list[float]:
    """Push -> replicas >= 1 for ``wakes`` random pools, one every ``interval`` seconds."""
    from kubernetes import client, config

    config.load_kube_config(str(env["cluster"].kubeconfig))  # type: ignore[no-untyped-call]
    apps = client.AppsV1Api()
    namespace, url = env["namespace"], env["redis"].url
    samples = []
    for _ in range(wakes):
        time.sleep(random.uniform(0.5 * interval, interval))
        index = random.randrange(count)
        pool, backend = f"p{index}", backend_of(index)
        push_tasks(url, backend, f"q{index}", 5)
        started = time.perf_counter()
        while (getattr(apps.read_namespaced_deployment_scale(pool, namespace).spec, "replicas", 0) or 0) < 1:
            if time.perf_counter() - started > WAKE_TIMEOUT_SECONDS:
                break  # recorded as the timeout: a lower bound, said in the row's wakes
            time.sleep(0.02)
        samples.append(time.perf_counter() - started)
        print(f"  wake {pool} ({backend}): {samples[-1]:.2f}s", flush=True)
        drain(url, backend, f"q{index}")
    return samples


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def wake_summary(samples: list[float]) -> dict[str, Any]:
    return {
        "wake_p50_seconds": round(statistics.median(samples), 3),
        "wake_p95_seconds": round(percentile(samples, 0.95), 3),
        "wake_max_seconds": round(max(samples), 3),
        "wakes": [round(s, 3) for s in samples],
    }


def fill_unrelated(redis: RedisServer, count: int) -> None:
    client = redis.client()
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.set(f"unrelated:{i}", "x" * 32)
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    client.close()


def run(
    count: int, wakes: int, interval: float, idle: float, unrelated: bool, tree: str | None = None
) -> list[dict[str, Any]]:
    """One operator over ``count`` pools; ``tree``: run the operator from another source tree (the baseline)."""
    print(f"== {count} pools ({tree or 'this tree'})", flush=True)
    saved = os.environ.get("PYTHONPATH")
    if tree is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(f"{tree}/{part}" for part in ("operator", "worker", "cli", ""))
    try:
        with stack(count) as env:
            if saved is not None:
                os.environ["PYTHONPATH"] = saved
            return measure(env, count, wakes, interval, idle, unrelated, "baseline: " + tree if tree else "this branch")
    finally:
        if saved is not None:
            os.environ["PYTHONPATH"] = saved


def measure(
    env: dict[str, Any], count: int, wakes: int, interval: float, idle: float, unrelated: bool, operator: str
) -> list[dict[str, Any]]:
    pid = env["operator"].process.pid
    time.sleep(10.0)  # the first status writes of every pool are over
    row: dict[str, Any] = {"operator": operator, "pools": count, "redis_keys": "pools' only"}
    row.update(idle_window(env["cluster"], pid, idle))
    row.update(wake_summary(wake_trials(env, count, wakes, interval)))
    row["rss_mb_after_wakes"] = round(process_usage(pid)[1], 1)
    print(f"  {row}", flush=True)
    rows = [row]
    if unrelated:
        fill_unrelated(env["redis"], UNRELATED_KEYS)
        crowded: dict[str, Any] = {
            "operator": operator,
            "pools": count,
            "redis_keys": f"+{UNRELATED_KEYS} unrelated",
        }
        crowded.update(idle_window(env["cluster"], pid, idle))
        crowded.update(wake_summary(wake_trials(env, count, wakes, interval)))
        crowded["wake_p95_vs_empty"] = round(crowded["wake_p95_seconds"] / row["wake_p95_seconds"], 3)
        print(f"  {crowded}", flush=True)
        rows.append(crowded)
    return rows


def plot(rows: list[dict[str, Any]], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plain = [r for r in rows if r["redis_keys"] == "pools' only" and r["operator"] == "this branch"]
    baseline = [r for r in rows if r["operator"] != "this branch" and r["redis_keys"] == "pools' only"]
    pools = [r["pools"] for r in plain]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    panels = [
        ("rss_mb", "RSS (MB)"),
        ("idle_cpu_cores", "idle CPU (cores)"),
        ("status_writes_per_second", "status writes/s"),
        ("wake_p95_seconds", "wake p95 (s)"),
    ]
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.plot(pools, [r[key] for r in plain], marker="o", label="measured")
        ax.axhline(TARGETS[key], color="tab:red", linestyle="--", label="target")
        if baseline:
            ax.scatter([r["pools"] for r in baseline], [r[key] for r in baseline], color="tab:gray", label="main")
        if key == "wake_p95_seconds":
            crowded = [r for r in rows if r["redis_keys"] != "pools' only" and r["operator"] == "this branch"]
            ax.scatter([r["pools"] for r in crowded], [r[key] for r in crowded], color="tab:orange", label="+100k keys")
        ax.set_xlabel("idle pools")
        ax.set_title(label)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pools", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--wakes", type=int, default=8)
    parser.add_argument("--interval", type=float, default=30.0, help="Seconds between wakes (random in [i/2, i]).")
    parser.add_argument("--idle", type=float, default=60.0, help="Seconds of the idle measurement window.")
    parser.add_argument(
        "--unrelated-at", type=int, default=None, help="Pool count whose run repeats with 100k unrelated keys."
    )
    parser.add_argument("--name", default="operator_scale")
    parser.add_argument("--baseline-tree", default=None, help="A source tree (e.g. /work/main) run as the baseline.")
    parser.add_argument("--baseline-pools", type=int, nargs="*", default=[100])
    parser.add_argument("--merge", action="store_true", help="Keep the rows of the results file it does not redo.")
    parser.add_argument(
        "--attach",
        nargs=3,
        metavar=("NAMESPACE", "OPERATOR_PID", "REDIS_URL"),
        help="Measure pools a run already set up (its operator and Redis still running) instead of making them.",
    )
    args = parser.parse_args(argv)
    unrelated_at = args.unrelated_at if args.unrelated_at is not None else args.pools[0]
    command = "python -m bench.operator_scale " + " ".join(sys.argv[1:] if argv is None else argv)
    rows: list[dict[str, Any]] = []
    commands = [command]
    path = RESULTS / f"{args.name}.json"
    if args.merge and path.exists():  # keep the rows of an earlier run that this one does not repeat
        earlier = json.loads(path.read_text())
        commands = [*earlier.get("commands", [earlier.get("command")]), command]
        rows = list(earlier["rows"])
    if args.attach:
        rows = merged(rows, attached(args.attach, args.pools[0], args.wakes, args.interval, args.idle))
        save(args.name, commands, rows)
        return
    for count in args.pools:
        rows = merged(rows, run(count, args.wakes, args.interval, args.idle, unrelated=count == unrelated_at))
        save(args.name, commands, rows)  # each size as it ends: a later one may not fit the time
    if args.baseline_tree:
        for count in args.baseline_pools:
            rows = merged(rows, run(count, args.wakes, args.interval, args.idle, False, args.baseline_tree))
            save(args.name, commands, rows)


def attached(attach: list[str], count: int, wakes: int, interval: float, idle: float) -> list[dict[str, Any]]:
    """The measurements of ``run`` on a stack left running (e.g. one whose settle outlived its timeout)."""
    from types import SimpleNamespace

    namespace, pid, url = attach
    cluster = Cluster.from_info(ensure_cluster(os.environ.get("SWELL_TEST_CLUSTER", "swell-test")))
    settled(cluster, namespace, count)
    env = {
        "cluster": cluster,
        "namespace": namespace,
        "redis": SimpleNamespace(url=url),
        "operator": SimpleNamespace(process=SimpleNamespace(pid=int(pid))),
    }
    return measure(env, count, wakes, interval, idle, False, "this branch")


def merged(rows: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with ``new`` in place of the rows of the same operator, pool count and Redis keys."""
    key = [(r["operator"], r["pools"], r["redis_keys"]) for r in new]
    return [r for r in rows if (r["operator"], r["pools"], r["redis_keys"]) not in key] + new


def save(name: str, commands: list[str], rows: list[dict[str, Any]]) -> None:
    rows = sorted(rows, key=lambda r: (r["operator"] != "this branch", r["pools"], r["redis_keys"]))
    report = {
        "name": name,
        "commands": commands,
        "machine": os.uname().sysname + " " + os.uname().release,
        "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "targets": TARGETS,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, name)
    print(f"wrote bench/results/{name}.json and .png ({commands[-1]})")


if __name__ == "__main__":
    main()
