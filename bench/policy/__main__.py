"""``python -m bench.policy``: every policy swept over its settings, on every trace, as Pareto frontiers.

For each trace and each setting of each policy (Swell's own ``decide``; KEDA + HPA; Knative's KPA) the
simulator reports replica-seconds and the p95 queue wait. A policy's frontier on a trace is its settings
that no other setting of the same policy beats on both. The headline compares, per trace, Swell's
frontier with every baseline's: at each p95 wait a baseline reaches, the fewest replica-seconds Swell
needs to wait no longer. Every policy sees the same traces and the same polling phase per seed (the
phase of KEDA's and the HPA's loops is drawn per seed, so a burst meets every point of the poll).

Writes bench/results/policy.json and policy.png and prints the headline. ``--quick`` runs a coarse grid
on one seed and writes nothing unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.policy.policies import KedaHpa, KnativeKpa, Scaler, Swell
from bench.policy.simulator import STEP, percentile, simulate
from bench.policy.traces import TRACES, Trace

RESULTS = Path(__file__).resolve().parents[1] / "results"
COMMAND = "python -m bench.policy"
CONCURRENCY = 4
MAX_REPLICAS = 50
SLO_SECONDS = 30.0
FAMILIES = ("swell", "keda", "kpa")
P95_TIE_SECONDS = STEP  # waits are measured on the simulator's 0.1 s clock
# Draws of each trace. Two left the frontiers' closest points 1 % apart with a seed-to-seed spread of 4-5 %
# in replica-seconds (heavy-tailed, 2 961 against 2 963): the verdict was the draw's.
SEEDS = 16
# The settings a reader knows by name; each is also a point of its family's sweep.
KEDA_DEFAULT = {
    "polling_interval": 30.0,
    "cooldown_period": 300.0,
    "list_length": 5.0,
    "scale_down_window": 300.0,
    "pending_entries": None,
    "min_replica_count": 0,
}
KEDA_EXPERT = {
    "polling_interval": 5.0,
    "cooldown_period": 60.0,
    "list_length": 20.0,
    "scale_down_window": 60.0,
    "pending_entries": 3.0,
    "min_replica_count": 0,
}
KPA_DEFAULT = {"target_utilisation": 0.7, "stable_window": 60.0}
SWELL_DEFAULT = {
    "target_wait_seconds": 30.0,
    "idle_seconds_before_zero": 30.0,
    "scale_down_stabilization_seconds": 60.0,
    "min_replicas": 0,
    "activation_backlog": 1,
}


@dataclass(frozen=True)
class Setting:
    family: str
    params: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.params)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.params)


def _setting(family: str, **params: Any) -> Setting:
    return Setting(family, tuple(sorted(params.items())))


def swell_settings(quick: bool) -> list[Setting]:
    """targetWaitSeconds x (idleSecondsBeforeZero, scaleDownStabilizationSeconds), a few pools that batch
    at zero (activationBacklog) and a few kept warm (replicas.min 1). A 15 s window lets short budgets
    hold their headroom part-time."""
    low = (0.1, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1, 1.5, 2, 3)  # below a pod start: the quantile rule
    waits = (0.1, 1, 5, 10, 20, 30, 60) if quick else (*low, 4, 5, 6, 7, 7.5, 8.5, 9, 10, 12.5, 15, 20, 30, 45, 60, 120)
    grid = [
        _setting(
            "swell",
            target_wait_seconds=float(w),
            idle_seconds_before_zero=float(i),
            scale_down_stabilization_seconds=60.0,
            min_replicas=0,
            activation_backlog=1,
        )
        for w, i in itertools.product(waits, (5, 30))
    ]
    grid += [
        _setting(
            "swell",
            target_wait_seconds=float(w),
            idle_seconds_before_zero=5.0,
            scale_down_stabilization_seconds=15.0,
            min_replicas=0,
            activation_backlog=1,
        )
        for w in waits
        if w <= 10
    ]
    # Budget spent at zero too: the pool leaves at once and wakes for a batch (activationBacklog).
    batches = ((30, 10),) if quick else ((15, 5), (30, 5), (30, 10), (30, 20), (60, 40))
    grid += [
        _setting(
            "swell",
            target_wait_seconds=float(w),
            idle_seconds_before_zero=0.0,
            scale_down_stabilization_seconds=60.0,
            min_replicas=0,
            activation_backlog=a,
        )
        for w, a in batches
    ]
    warm = (0.1, 2) if quick else (0.1, 0.5, 2, 10)
    grid += [
        _setting(
            "swell",
            target_wait_seconds=float(w),
            idle_seconds_before_zero=5.0,
            scale_down_stabilization_seconds=d,
            min_replicas=1,
            activation_backlog=1,
        )
        for w, d in itertools.product(warm, (15.0, 60.0))
    ]
    # Pools kept warmer (replicas.min 2 and 3; KEDA's sweep has minReplicaCount 2 and 3 too).
    grid += [
        _setting(
            "swell",
            target_wait_seconds=float(w),
            idle_seconds_before_zero=5.0,
            scale_down_stabilization_seconds=60.0,
            min_replicas=m,
            activation_backlog=1,
        )
        for w, m in itertools.product((0.1, 2) if not quick else (2,), (2, 3))
    ]
    return grid


def keda_settings(quick: bool) -> list[Setting]:
    """KEDA ScaledObject + HPA: the defaults, the expert setup of issue 13, and a grid around both."""
    # (pollingInterval, cooldownPeriod, minReplicaCount): cooldown matters only on the way to zero.
    loops = ((30.0, 300.0, 0), (5.0, 60.0, 0), (5.0, 30.0, 0), (5.0, 300.0, 1))
    list_lengths = (5.0, 20.0) if quick else (2.0, 5.0, 20.0, 50.0)
    windows = (60.0, 300.0) if quick else (0.0, 60.0, 300.0)
    in_flight = (None, 3.0)
    grid = {
        _setting(
            "keda",
            polling_interval=p,
            cooldown_period=c,
            min_replica_count=m,
            list_length=n,
            scale_down_window=w,
            pending_entries=f,
        )
        for (p, c, m), n, w, f in itertools.product(loops, list_lengths, windows, in_flight)
    }
    # Warmer pools (minReplicaCount 2 and 3, as Swell's sweep has replicas.min 2 and 3), expert loops.
    grid |= {
        _setting(
            "keda",
            polling_interval=5.0,
            cooldown_period=300.0,
            min_replica_count=m,
            list_length=n,
            scale_down_window=w,
            pending_entries=f,
        )
        for m, n, w, f in itertools.product((2, 3), (5.0, 20.0), (60.0, 300.0), in_flight)
    }
    grid |= {_setting("keda", **KEDA_DEFAULT), _setting("keda", **KEDA_EXPERT)}
    return sorted(grid, key=lambda s: s.label)


def kpa_settings(quick: bool) -> list[Setting]:
    utilisations = (0.7, 1.0) if quick else (0.5, 0.7, 0.85, 1.0)
    windows = (60.0,) if quick else (6.0, 20.0, 60.0, 180.0)
    return [_setting("kpa", target_utilisation=u, stable_window=w) for u, w in itertools.product(utilisations, windows)]


def all_settings(quick: bool) -> list[Setting]:
    return swell_settings(quick) + keda_settings(quick) + kpa_settings(quick)


def make_scaler(setting: Setting, phase: float, task_seconds_hint: float = 1.0) -> Scaler:
    params = setting.as_dict()
    if setting.family == "swell":
        return Swell(CONCURRENCY, MAX_REPLICAS, task_seconds_hint=task_seconds_hint, **params)
    if setting.family == "keda":
        return KedaHpa(CONCURRENCY, MAX_REPLICAS, phase=phase, **params)
    if setting.family == "kpa":  # panic-window-percentage 10 % of the stable window (Knative default)
        return KnativeKpa(
            CONCURRENCY, MAX_REPLICAS, phase=phase, panic_window=max(params["stable_window"] * 0.1, 1.0), **params
        )
    raise ValueError(setting.family)


@lru_cache(maxsize=64)
def trace_of(name: str, seed: int) -> Trace:
    return TRACES[name](random.Random(seed))


def phase_of(seed: int) -> float:
    return random.Random(seed * 7919 + 1).random()


def lower_bound(name: str, seeds: Sequence[int]) -> float:
    """Total service time over the slots of a pod: what a perfectly packed pool pays."""
    return statistics.mean(sum(service for _, service in trace_of(name, s)) for s in seeds) / CONCURRENCY


def measure(job: tuple[str, Setting, tuple[int, ...], float]) -> dict[str, Any]:
    trace_name, setting, seeds, startup = job
    results = []
    for seed in seeds:
        scaler = make_scaler(setting, phase_of(seed))
        results.append(
            simulate(
                trace_of(trace_name, seed),
                scaler,
                concurrency=CONCURRENCY,
                startup_seconds=startup,
                drain_idle_first=setting.family == "swell",
            )
        )
    waits = [w for r in results for w in r.waits]
    return {
        "trace": trace_name,
        "family": setting.family,
        "setting": setting.as_dict(),
        "replica_seconds": round(statistics.mean(r.replica_seconds for r in results), 1),
        "replica_seconds_per_seed": [round(r.replica_seconds, 1) for r in results],
        "wait_p50_s": round(percentile(waits, 0.50), 2),
        "wait_p95_s": round(percentile(waits, 0.95), 2),
        "wait_p99_s": round(percentile(waits, 0.99), 2),
        "share_over_slo": round(sum(w > SLO_SECONDS for w in waits) / max(len(waits), 1), 4),
        "scaling_actions": round(statistics.mean(r.scaling_actions for r in results), 1),
        "unfinished_tasks": sum(r.unfinished for r in results),
    }


# --- frontiers --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    p95: float
    replica_seconds: float
    setting: dict[str, Any] = field(default_factory=dict, compare=False)
    per_seed: tuple[float, ...] = field(default=(), compare=False)  # replica-seconds on each seed, in order


def frontier(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both axes, by rising p95 wait (and so falling replica-seconds)."""
    best: list[Point] = []
    for point in sorted(points, key=lambda p: (p.p95, p.replica_seconds)):
        if not best or point.replica_seconds < best[-1].replica_seconds:
            best.append(point)
    return best


def cheapest_within(front: Sequence[Point], p95: float, tie: float = 0.0) -> Point | None:
    """The fewest replica-seconds on a frontier among points whose p95 wait is at most ``p95`` (+ ``tie``)."""
    within = [p for p in front if p.p95 <= p95 + tie + 1e-9]
    return min(within, key=lambda p: p.replica_seconds) if within else None


def dominance(swell: Sequence[Point], baseline: Sequence[Point]) -> dict[str, Any]:
    """Each baseline frontier point against Swell at the same or a shorter p95 wait.

    Waits are measured on the simulator's clock, so p95 waits within one tick (``P95_TIE_SECONDS``) count
    as equal. ``beaten``: Swell needs fewer replica-seconds. ``not_beaten``: it needs as many or more.
    ``out_of_reach``: the baseline waits less than any Swell setting does (no comparison possible).
    ``worst_ratio``: the highest Swell / baseline replica-seconds over the comparable points, and
    ``worst_ratio_se`` its standard error from the paired per-seed differences (each seed is one trace run
    by both): a margin inside it would go either way on other seeds. None without two seeds for both.
    """
    beaten, not_beaten, out_of_reach = 0, [], []
    worst: tuple[float, Point, Point] | None = None  # the highest ratio, with Swell's point and the baseline's
    for point in baseline:
        ours = cheapest_within(swell, point.p95, P95_TIE_SECONDS)
        if ours is None:
            out_of_reach.append({"p95": point.p95, "replica_seconds": point.replica_seconds})
            continue
        ratio = ours.replica_seconds / point.replica_seconds
        if worst is None or ratio > worst[0]:
            worst = (ratio, ours, point)
        if ratio < 1.0:
            beaten += 1
        else:
            not_beaten.append(
                {
                    "p95": point.p95,
                    "replica_seconds": point.replica_seconds,
                    "swell_replica_seconds": ours.replica_seconds,
                    "swell_p95": ours.p95,
                }
            )
    return {
        "beaten": beaten,
        "not_beaten": not_beaten,
        "out_of_reach": out_of_reach,
        "worst_ratio": None if worst is None else round(worst[0], 3),
        "worst_ratio_se": None if worst is None else _paired_ratio_se(worst[1], worst[2]),
        "dominates": not not_beaten and not out_of_reach,
    }


def _paired_ratio_se(ours: Point, theirs: Point) -> float | None:
    if len(ours.per_seed) < 2 or len(ours.per_seed) != len(theirs.per_seed):
        return None
    pairs = list(zip(ours.per_seed, theirs.per_seed, strict=True))
    spread = statistics.stdev(a - b for a, b in pairs) / math.sqrt(len(pairs))
    return round(spread / theirs.replica_seconds, 3)


def headline(trace: str, rows: list[dict[str, Any]], bound: float) -> dict[str, Any]:
    """One trace's comparison: frontiers, Swell against each baseline, and the done-when checks."""
    points = {
        f: [
            Point(r["wait_p95_s"], r["replica_seconds"], r["setting"], tuple(r.get("replica_seconds_per_seed", ())))
            for r in rows
            if r["family"] == f
        ]
        for f in FAMILIES
    }
    fronts = {f: frontier(points[f]) for f in FAMILIES}
    swell = fronts["swell"]
    keda_default = next(r for r in rows if r["family"] == "keda" and r["setting"] == _normal(KEDA_DEFAULT))
    better_than_default = [p for p in swell if p.p95 < keda_default["wait_p95_s"]]
    swell_vs_default = min(better_than_default, key=lambda p: p.replica_seconds) if better_than_default else None
    at_slo = {f: cheapest_within(fronts[f], SLO_SECONDS) for f in FAMILIES}
    baselines_at_slo = [p for f in ("keda", "kpa") if (p := at_slo[f]) is not None]
    best_baseline = min(baselines_at_slo, key=lambda p: p.replica_seconds) if baselines_at_slo else None
    best_family = None if best_baseline is None else next(f for f in ("keda", "kpa") if at_slo[f] is best_baseline)
    swell_at_slo = at_slo["swell"]
    ratio_at_slo = (
        None
        if swell_at_slo is None or best_baseline is None
        else round(swell_at_slo.replica_seconds / best_baseline.replica_seconds, 3)
    )
    against = {f: dominance(swell, fronts[f]) for f in ("keda", "kpa")}
    saving = None
    if swell_vs_default is not None:
        saving = 1 - swell_vs_default.replica_seconds / keda_default["replica_seconds"]
    over_bound = None if swell_at_slo is None else swell_at_slo.replica_seconds / bound
    return {
        "trace": trace,
        "lower_bound_replica_seconds": round(bound, 1),
        "frontiers": {f: [_point_json(p) for p in fronts[f]] for f in FAMILIES},
        "keda_default": {"p95": keda_default["wait_p95_s"], "replica_seconds": keda_default["replica_seconds"]},
        "swell_better_wait_than_keda_default": None if swell_vs_default is None else _point_json(swell_vs_default),
        "saving_vs_keda_default": None if saving is None else round(saving, 3),
        "at_slo": {f: None if p is None else _point_json(p) for f, p in at_slo.items()},
        "best_baseline_at_slo": best_family,
        "swell_over_best_baseline_at_slo": ratio_at_slo,
        "swell_at_slo_over_lower_bound": None if over_bound is None else round(over_bound, 3),
        "against": against,
        "done": {
            "saves_40pct_vs_keda_default_at_better_p95": saving is not None and saving >= 0.40,
            "dominates_every_baseline": all(a["dominates"] for a in against.values()),
            "within_1_5x_lower_bound_inside_slo": over_bound is not None and over_bound <= 1.5,
        },
    }


def _normal(params: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(params.items()))


def _point_json(point: Point) -> dict[str, Any]:
    return {"p95": point.p95, "replica_seconds": point.replica_seconds, "setting": point.setting}


# --- running ----------------------------------------------------------------------------------------------
BASELINE_FAMILIES = ("keda", "kpa")
REUSE_SPOT_CHECKS = 6  # baseline rows recomputed, spread over the traces, when earlier ones are reused


def reusable_baselines(
    earlier: dict[str, Any], traces: Sequence[str], seeds: Sequence[int], startup: float, quick: bool
) -> list[dict[str, Any]]:
    """The baseline rows of an earlier result, where it ran the same grid on the same traces and seeds.

    The simulator and the baselines are deterministic and change only with bench/policy/policies.py,
    simulator.py and traces.py: a run that changes only Swell need not redo them (on a loaded 2-core
    machine the full grid takes over an hour). Spot checks in ``run`` recompute some of them and stop the
    run if any differs. Anything else that differs (grid, seeds, start time, traces) refuses the reuse.
    """
    same = (
        earlier.get("seeds") == list(seeds)
        and earlier.get("pod_startup_seconds") == startup
        and earlier.get("concurrency_per_pod") == CONCURRENCY
        and earlier.get("max_replicas") == MAX_REPLICAS
    )
    if not same:
        raise SystemExit("--baselines-from: seeds, pod start, concurrency or max replicas differ; run them all")
    rows = [r for r in earlier["rows"] if r["family"] in BASELINE_FAMILIES and r["trace"] in traces]
    wanted = {(t, s.label) for t in traces for s in all_settings(quick) if s.family in BASELINE_FAMILIES}
    found = {(r["trace"], _setting(r["family"], **r["setting"]).label) for r in rows}
    if found != wanted or len(rows) != len(wanted):
        raise SystemExit("--baselines-from: its baseline grid is not this one; run them all")
    return rows


def run(
    traces: Sequence[str],
    seeds: Sequence[int],
    startup: float,
    quick: bool,
    jobs: int,
    baselines: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    settings = all_settings(quick)
    if baselines is not None:
        settings = [s for s in settings if s.family not in BASELINE_FAMILIES]
    work = [(t, s, tuple(seeds), startup) for t in traces for s in settings]
    checks: list[dict[str, Any]] = []
    if baselines is not None:  # recompute a few, spread over traces and families, and compare
        each = REUSE_SPOT_CHECKS // len(BASELINE_FAMILIES)
        picked = []
        for family in BASELINE_FAMILIES:
            of_family = [r for r in baselines if r["family"] == family]
            picked += of_family[:: max(len(of_family) // each, 1)][:each]
        checks = picked
        work += [(r["trace"], _setting(r["family"], **r["setting"]), tuple(seeds), startup) for r in picked]
    rows: list[dict[str, Any]] = []
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            rows = list(pool.map(measure, work, chunksize=4))
    else:
        rows = [measure(job) for job in work]
    if baselines is not None:
        recomputed, rows = rows[len(rows) - len(checks) :], rows[: len(rows) - len(checks)]
        for old, new in zip(checks, recomputed, strict=True):
            if old != new:
                raise SystemExit(f"--baselines-from: a reused baseline row differs when recomputed: {old} != {new}")
        rows = rows + baselines
    summaries = [headline(t, [r for r in rows if r["trace"] == t], lower_bound(t, seeds)) for t in traces]
    return {"rows": rows, "traces": summaries, "baselines_spot_checked": len(checks)}


def table(summaries: list[dict[str, Any]]) -> str:
    head = (
        f"{'trace':19} {'bound':>6} {'KEDA dflt rs/p95':>17} {'Swell rs/p95 (better)':>22} {'saving':>7} "
        f"{'Swell@SLO':>10} {'best base@SLO':>18} {'ratio':>6} {'xLB':>5} {'dominates':>9}"
    )
    lines = [head, "-" * len(head)]
    for s in summaries:
        kd, sv, slo = s["keda_default"], s["swell_better_wait_than_keda_default"], s["at_slo"]
        best = s["best_baseline_at_slo"]
        best_text = "-" if best is None else f"{best} {slo[best]['replica_seconds']:.0f}/{slo[best]['p95']:.1f}"
        lines.append(
            f"{s['trace']:19} {s['lower_bound_replica_seconds']:>6.0f} "
            f"{kd['replica_seconds']:>9.0f}/{kd['p95']:<7.1f} "
            + (f"{sv['replica_seconds']:>14.0f}/{sv['p95']:<7.1f}" if sv else f"{'-':>22}")
            + f" {_pct(s['saving_vs_keda_default']):>7} "
            + (f"{slo['swell']['replica_seconds']:>10.0f}" if slo["swell"] else f"{'-':>10}")
            + f" {best_text:>18} {_num(s['swell_over_best_baseline_at_slo']):>6} "
            f"{_num(s['swell_at_slo_over_lower_bound']):>5} {s['done']['dominates_every_baseline']!s:>9}"
        )
    return "\n".join(lines)


def markdown(summaries: list[dict[str, Any]]) -> str:
    """The headline as a Markdown table for the README."""
    lines = [
        "| trace | lower bound | KEDA defaults: replica-s / p95 | Swell at a better p95: replica-s / p95 | saving "
        "| Swell within SLO: replica-s / p95 (x bound) | best baseline within SLO | Swell / best "
        "| baseline frontier points Swell beats / not / out of reach "
        "| worst Swell / baseline on the frontiers (± seed-to-seed SE) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        kd, sv, slo, best = (
            s["keda_default"],
            s["swell_better_wait_than_keda_default"],
            s["at_slo"],
            s["best_baseline_at_slo"],
        )
        beaten = sum(a["beaten"] for a in s["against"].values())
        not_beaten = sum(len(a["not_beaten"]) for a in s["against"].values())
        out = sum(len(a["out_of_reach"]) for a in s["against"].values())
        swell_slo = slo["swell"]
        lines.append(
            f"| {s['trace']} | {s['lower_bound_replica_seconds']:.0f} | "
            f"{kd['replica_seconds']:.0f} / {kd['p95']:.1f} s | "
            + (f"{sv['replica_seconds']:.0f} / {sv['p95']:.1f} s" if sv else "-")
            + f" | {_pct(s['saving_vs_keda_default'])} | "
            + (
                f"{swell_slo['replica_seconds']:.0f} / {swell_slo['p95']:.1f} s "
                f"({s['swell_at_slo_over_lower_bound']:.2f}x)"
                if swell_slo
                else "none"
            )
            + " | "
            + (
                f"{'KEDA' if best == 'keda' else 'KPA'} {slo[best]['replica_seconds']:.0f} / {slo[best]['p95']:.1f} s"
                if best
                else "none"
            )
            + f" | {_num(s['swell_over_best_baseline_at_slo'])} | {beaten} / {not_beaten} / {out} | "
            + _worst_text(s["against"])
            + " |"
        )
    return "\n".join(lines)


def _worst_text(against: dict[str, dict[str, Any]]) -> str:
    """The highest worst ratio over the baselines, with its family and standard error."""
    rated = [(a["worst_ratio"], f, a.get("worst_ratio_se")) for f, a in against.items() if a["worst_ratio"] is not None]
    if not rated:
        return "-"
    ratio, family, se = max(rated, key=lambda r: r[0])
    spread = "" if se is None else f" ± {se:.3f}"
    return f"{ratio:.3f}{spread} ({'KEDA' if family == 'keda' else 'KPA'})"


def named_markdown(rows: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> str:
    """The settings a reader knows by name, one point each, as a Markdown table for the README."""
    named: dict[str, tuple[str, dict[str, Any]]] = {
        "Swell defaults": ("swell", SWELL_DEFAULT),
        "KEDA defaults": ("keda", KEDA_DEFAULT),
        "KEDA expert (issue 13)": ("keda", KEDA_EXPERT),
        "Knative KPA defaults": ("kpa", KPA_DEFAULT),
    }
    lines = [
        "| trace | lower bound | " + " | ".join(named) + " |",
        "|---|---|" + "---|" * len(named),
    ]
    for summary in summaries:
        cells = []
        for family, params in named.values():
            row = next(
                (
                    r
                    for r in rows
                    if r["trace"] == summary["trace"] and r["family"] == family and r["setting"] == _normal(params)
                ),
                None,
            )
            if row is None:
                cells.append("-")
                continue
            over = f" ({row['share_over_slo']:.0%} > SLO)" if row["share_over_slo"] >= 0.005 else ""
            cells.append(f"{row['replica_seconds']:.0f} / {row['wait_p95_s']:.1f} s{over}")
        lines.append(
            f"| {summary['trace']} | {summary['lower_bound_replica_seconds']:.0f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def plot(summaries: list[dict[str, Any]], rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    lines = math.ceil(len(summaries) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.4 * lines), squeeze=False)
    colours = {"swell": "tab:green", "keda": "tab:blue", "kpa": "tab:orange"}
    names = {"swell": "Swell", "keda": "KEDA + HPA", "kpa": "Knative KPA"}
    for ax, summary in zip(axes.flat, summaries, strict=False):
        for family in FAMILIES:
            everything = [r for r in rows if r["trace"] == summary["trace"] and r["family"] == family]
            ax.scatter(
                [r["wait_p95_s"] for r in everything],
                [r["replica_seconds"] for r in everything],
                s=5,
                alpha=0.25,
                color=colours[family],
            )
            front = summary["frontiers"][family]
            ax.step(
                [p["p95"] for p in front],
                [p["replica_seconds"] for p in front],
                where="post",
                color=colours[family],
                lw=1.6,
                label=names[family],
                marker="o",
                ms=2.5,
            )
        kd = summary["keda_default"]
        ax.scatter([kd["p95"]], [kd["replica_seconds"]], marker="x", s=40, color="black", label="KEDA defaults")
        ax.axhline(summary["lower_bound_replica_seconds"], color="grey", ls=":", lw=1, label="lower bound")
        ax.axvline(SLO_SECONDS, color="red", ls="--", lw=0.8, label="SLO")
        ax.set_xscale("symlog", linthresh=1.0)
        widest = max(r["wait_p95_s"] for r in rows if r["trace"] == summary["trace"])
        ax.set_xlim(0, max(widest, SLO_SECONDS) * 1.5)
        ax.set_yscale("log")
        ax.set_title(summary["trace"], fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(summaries) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("replica-seconds", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("p95 queue wait (s)", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle(
        "Replica-seconds against p95 wait: every setting (dots) and each policy's Pareto frontier (line); "
        "lower and further left is better",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds per trace ({SEEDS}; 1 with --quick)")
    parser.add_argument("--startup-seconds", type=float, default=10.0, help="pod start + model load")
    parser.add_argument("--traces", nargs="*", default=list(TRACES))
    parser.add_argument("--quick", action="store_true", help="coarse grid, one seed, writes only with --out")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--out", type=Path, default=None, help="directory for policy.json / policy.png")
    parser.add_argument(
        "--baselines-from",
        type=Path,
        default=None,
        help="reuse the KEDA and KPA rows of an earlier policy.json with the same grid (spot-checked)",
    )
    args = parser.parse_args(argv)
    seeds = list(range(1, (args.seeds or (1 if args.quick else SEEDS)) + 1))
    out: Path | None = args.out if args.out is not None or args.quick else RESULTS
    started = time.monotonic()
    baselines = None
    reused_from = None
    if args.baselines_from is not None:
        earlier = json.loads(args.baselines_from.read_text())
        baselines = reusable_baselines(earlier, args.traces, seeds, args.startup_seconds, args.quick)
        reused_from = {"path": str(args.baselines_from), "command": earlier.get("command"), "rows": len(baselines)}
    outcome = run(args.traces, seeds, args.startup_seconds, args.quick, args.jobs, baselines)
    print(table(outcome["traces"]))
    runtime = round(time.monotonic() - started, 1)
    if out is None:
        print(f"\n{len(outcome['rows'])} runs in {runtime} s (--quick: nothing written)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "name": "policy",
        "command": " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)]),
        "machine": platform.platform(),
        "seeds": seeds,
        "pod_startup_seconds": args.startup_seconds,
        "concurrency_per_pod": CONCURRENCY,
        "max_replicas": MAX_REPLICAS,
        "slo_seconds": SLO_SECONDS,
        "p95_tie_seconds": P95_TIE_SECONDS,
        "named_settings": {
            "keda_default": KEDA_DEFAULT,
            "keda_expert": KEDA_EXPERT,
            "kpa_default": KPA_DEFAULT,
            "swell_default": SWELL_DEFAULT,
        },
        "settings_per_family": {f: sum(1 for s in all_settings(args.quick) if s.family == f) for f in FAMILIES},
        "traces": outcome["traces"],
        "rows": outcome["rows"],
        "baselines_reused_from": None
        if reused_from is None
        else {**reused_from, "spot_checked_identical": outcome["baselines_spot_checked"]},
        "runtime_seconds": runtime,
    }
    (out / "policy.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(outcome["traces"], outcome["rows"], out / "policy.png")
    (out / "policy_headline.md").write_text(
        markdown(outcome["traces"]) + "\n\n" + named_markdown(outcome["rows"], outcome["traces"]) + "\n"
    )
    print(f"\nwrote {out}/policy.json, policy.png and policy_headline.md ({report['command']}, {runtime} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
