"""Arrival traces for the policy benchmark: (arrival time, service seconds) pairs, seeded and reproducible.

Every trace lasts ``DURATION`` seconds. Arrival rates are in tasks per second; arrivals are a Poisson
process with that (time-varying) rate, drawn by thinning.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

DURATION = 1800.0
Trace = list[tuple[float, float]]


def _poisson(rate: Callable[[float], float], peak: float, rng: random.Random, service: Callable[[], float]) -> Trace:
    arrivals: Trace = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= DURATION:
            return arrivals
        if rng.random() * peak <= rate(t):
            arrivals.append((t, service()))


def _exponential(rng: random.Random, mean: float = 1.0) -> Callable[[], float]:
    return lambda: rng.expovariate(1.0 / mean)


def steady(rng: random.Random) -> Trace:
    return _poisson(lambda t: 3.0, 3.0, rng, _exponential(rng))


def diurnal(rng: random.Random) -> Trace:
    """A day compressed into 30 minutes: 0.2 to 8 tasks/s along a sine."""

    def rate(t: float) -> float:
        return 0.2 + 3.9 * (1 - math.cos(2 * math.pi * t / DURATION))

    return _poisson(rate, 8.0, rng, _exponential(rng))


def on_off(rng: random.Random) -> Trace:
    """Five minutes at 8 tasks/s, five minutes of nothing, three times."""
    return _poisson(lambda t: 8.0 if (t // 300) % 2 == 0 else 0.0, 8.0, rng, _exponential(rng))


def spike_from_zero(rng: random.Random) -> Trace:
    """Idle for two minutes, then 2 000 tasks at once (a batch job), then idle again."""
    service = _exponential(rng)
    return [(120.0 + rng.random() * 0.5, service()) for _ in range(2000)]


def heavy_tailed(rng: random.Random) -> Trace:
    """Steady 2 tasks/s, lognormal service times (median 0.6 s, mean ~1 s, a long tail of 10 s+ tasks)."""
    return _poisson(lambda t: 2.0, 2.0, rng, lambda: rng.lognormvariate(math.log(0.6), 1.0))


def azure_shaped(rng: random.Random) -> Trace:
    """Shaped after the Azure Functions 2019 trace (Shahrad et al., "Serverless in the Wild", ATC'20): most
    applications are invoked sporadically and the per-minute invocation counts of a busy one are bursty
    and heavy-tailed. We do not replay the data: each minute is idle with probability 0.5, otherwise its
    rate is drawn from a Pareto distribution (shape 1.5, scale 0.5 tasks/s, capped at 20 tasks/s)."""
    minutes = [0.0 if rng.random() < 0.5 else min(20.0, 0.5 * rng.paretovariate(1.5)) for _ in range(31)]
    return _poisson(lambda t: minutes[int(t // 60)], 20.0, rng, _exponential(rng))


def pareto_tasks(rng: random.Random) -> Trace:
    """Steady 2 tasks/s, Pareto service times (shape 1.5, mean 1 s): a few tasks take a minute or more."""
    return _poisson(lambda t: 2.0, 2.0, rng, lambda: min(600.0, rng.paretovariate(1.5) / 3.0))


def short_bursts(rng: random.Random) -> Trace:
    """On/off bursts: 20 s at 16 tasks/s every two minutes, nothing in between."""
    return _poisson(lambda t: 16.0 if t % 120 < 20 else 0.0, 16.0, rng, _exponential(rng))


def slow_ramp(rng: random.Random) -> Trace:
    """From nothing to 8 tasks/s over the 30 minutes, linearly."""
    return _poisson(lambda t: 8.0 * t / DURATION, 8.0, rng, _exponential(rng))


def overload_burst(rng: random.Random) -> Trace:
    """12 000 tasks at once after two minutes: twice what 50 replicas of 4 slots drain in a 30 s SLO."""
    service = _exponential(rng)
    return [(120.0 + rng.random() * 0.5, service()) for _ in range(12_000)]


def spike_random_phase(rng: random.Random) -> Trace:
    """The spike of ``spike_from_zero`` at a random moment of a minute, so it meets every polling phase."""
    at = 120.0 + rng.random() * 60.0
    service = _exponential(rng)
    return [(at + rng.random() * 0.5, service()) for _ in range(2000)]


def spike_2s_tasks(rng: random.Random) -> Trace:
    """The spike with 2 s tasks, for pools that keep ``taskSecondsHint`` at its default of 1 s."""
    service = _exponential(rng, 2.0)
    return [(120.0 + rng.random() * 0.5, service()) for _ in range(2000)]


TRACES: dict[str, Callable[[random.Random], Trace]] = {
    "steady": steady,
    "diurnal": diurnal,
    "on-off": on_off,
    "spike-from-zero": spike_from_zero,
    "heavy-tailed": heavy_tailed,
    "azure-shaped": azure_shaped,
    "pareto-tasks": pareto_tasks,
    "short-bursts": short_bursts,
    "slow-ramp": slow_ramp,
    "overload-burst": overload_burst,
    "spike-random-phase": spike_random_phase,
    "spike-2s-tasks": spike_2s_tasks,
}
