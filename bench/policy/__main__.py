"""``python -m bench.policy``: replica-seconds and queue wait per trace and policy, with the lower bound.

Writes bench/results/policy.json and policy.png and prints the table. Every policy sees the same
traces (same seeds); Swell's numbers come from the operator's own ``decide``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.policy.policies import KedaHpa, KnativeKpa, Scaler, Swell, keda_tuned
from bench.policy.simulator import percentile, simulate
from bench.policy.traces import TRACES

RESULTS = Path(__file__).resolve().parents[1] / "results"
COMMAND = "python -m bench.policy"
CONCURRENCY = 4
MAX_REPLICAS = 50
SLO_SECONDS = 30.0

POLICIES: dict[str, Callable[[], Scaler]] = {
    "swell": lambda: Swell(CONCURRENCY, MAX_REPLICAS, target_wait_seconds=SLO_SECONDS),
    "keda-default": lambda: KedaHpa(CONCURRENCY, MAX_REPLICAS),
    "keda-tuned": lambda: keda_tuned(CONCURRENCY, MAX_REPLICAS),
    "knative-kpa": lambda: KnativeKpa(CONCURRENCY, MAX_REPLICAS),
}


def run(seeds: list[int], startup_seconds: float, traces: list[str]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    timelines: dict[str, dict[str, Any]] = {}
    for trace_name in traces:
        for policy_name, make in POLICIES.items():
            per_seed = []
            for seed in seeds:
                trace = TRACES[trace_name](random.Random(seed))
                bound = sum(service for _, service in trace) / CONCURRENCY
                result = simulate(trace, make(), concurrency=CONCURRENCY, startup_seconds=startup_seconds,
                                  drain_idle_first=policy_name == "swell")
                per_seed.append((result, bound))
                if seed == seeds[0]:
                    timelines.setdefault(trace_name, {})[policy_name] = result.timeline
            waits = [w for r, _ in per_seed for w in r.waits]
            replica_seconds = statistics.mean(r.replica_seconds for r, _ in per_seed)
            bound = statistics.mean(b for _, b in per_seed)
            rows.append({
                "trace": trace_name,
                "policy": policy_name,
                "replica_seconds": round(replica_seconds, 1),
                "lower_bound_replica_seconds": round(bound, 1),
                "ratio_to_lower_bound": round(replica_seconds / bound, 3),
                "wait_p50_s": round(percentile(waits, 0.50), 2),
                "wait_p95_s": round(percentile(waits, 0.95), 2),
                "wait_p99_s": round(percentile(waits, 0.99), 2),
                "share_over_slo": round(sum(w > SLO_SECONDS for w in waits) / max(len(waits), 1), 4),
                "scaling_actions": round(statistics.mean(r.scaling_actions for r, _ in per_seed), 1),
                "unfinished_tasks": sum(r.unfinished for r, _ in per_seed),
            })
    for row in rows:
        keda = next(r for r in rows if r["trace"] == row["trace"] and r["policy"] == "keda-default")
        row["replica_seconds_vs_keda_default"] = round(row["replica_seconds"] / keda["replica_seconds"], 3)
    return {"rows": rows, "timelines": timelines}


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'trace':16} {'policy':13} {'replica-s':>10} {'x bound':>8} {'x KEDA':>7} {'p50 s':>7} "
            f"{'p95 s':>7} {'p99 s':>7} {'>SLO':>6} {'actions':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['trace']:16} {r['policy']:13} {r['replica_seconds']:>10.0f} {r['ratio_to_lower_bound']:>8.2f} "
            f"{r['replica_seconds_vs_keda_default']:>7.2f} {r['wait_p50_s']:>7.1f} {r['wait_p95_s']:>7.1f} "
            f"{r['wait_p99_s']:>7.1f} {r['share_over_slo']:>6.1%} {r['scaling_actions']:>7.0f}"
        )
    return "\n".join(lines)


def plot(timelines: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(timelines), 1, figsize=(11, 2.6 * len(timelines)), sharex=True)
    for ax, (trace, by_policy) in zip(axes, timelines.items(), strict=True):
        for policy, timeline in by_policy.items():
            ax.plot([t for t, *_ in timeline], [r for *_, r in timeline], label=f"{policy} replicas", lw=1)
        first = next(iter(by_policy.values()))
        ax2 = ax.twinx()
        ax2.fill_between([t for t, *_ in first], [b + f for _, b, f, _ in first], color="grey", alpha=0.15)
        ax2.set_ylabel("queued+in flight (swell)", fontsize=7)
        ax.set_title(trace, fontsize=9)
        ax.set_ylabel("replicas")
    axes[0].legend(fontsize=7, ncol=4, loc="upper right")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--startup-seconds", type=float, default=10.0, help="pod start + model load")
    parser.add_argument("--traces", nargs="*", default=list(TRACES))
    args = parser.parse_args(argv)
    started = time.monotonic()
    outcome = run(list(range(1, args.seeds + 1)), args.startup_seconds, args.traces)
    print(table(outcome["rows"]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "name": "policy",
        "command": COMMAND + (" " + " ".join(argv) if argv else ""),
        "machine": platform.platform(),
        "seeds": args.seeds,
        "pod_startup_seconds": args.startup_seconds,
        "concurrency_per_pod": CONCURRENCY,
        "slo_seconds": SLO_SECONDS,
        "rows": outcome["rows"],
        "runtime_seconds": round(time.monotonic() - started, 1),
    }
    (RESULTS / "policy.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(outcome["timelines"], RESULTS / "policy.png")
    print(f"\nwrote bench/results/policy.json and policy.png ({COMMAND}, {report['runtime_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
