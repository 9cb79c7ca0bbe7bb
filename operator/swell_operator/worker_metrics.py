"""The bundled workers' own figures, scraped from their ``/metrics``, for queues whose backlog cannot be seen.

Pub/Sub does not say how many messages wait (Cloud Monitoring does, minutes late), but every worker
knows exactly what it holds. The operator reads each running worker pod at ``http://<podIP>:<port>/metrics``
and keeps the previous counters per pod, so it reports the interval between two reads: the mean tasks in
flight (busy slot-seconds over the elapsed time, not one sample), tasks settled, and pushes refused for
want of a free slot. A pod that comes or goes adds or loses only its own interval, so the running total
of settled tasks never goes backwards; a pod created after the scraper counts from zero, so a task it
finished before its first read still counts. A pod that does not answer (still starting) is left out.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families
from swell_contract import metrics as names

SCRAPE_TIMEOUT_SECONDS = 1.0
# Sample names as the worker exposes them.
IN_FLIGHT = names.TASKS_IN_FLIGHT
BUSY_SLOT_SECONDS = names.sample(names.BUSY_SLOT_SECONDS)
SETTLED = (names.sample(names.TASKS_SUCCEEDED), names.sample(names.TASKS_DEAD_LETTERED))
REFUSED = names.sample(names.PUSHES_REFUSED)


@dataclass(frozen=True)
class PodCounters:
    at: float
    in_flight: float
    busy_slot_seconds: float
    settled: float
    refused: float


@dataclass(frozen=True)
class PoolFigures:
    """What the pool's workers said between the previous read and this one."""

    answered: int = 0
    # Pods that answered and are Ready (in a Service's endpoints), e.g. to route pushes to.
    ready_answered: int = 0
    in_flight: int = 0
    mean_in_flight: float = 0.0
    per_pod: dict[str, int] = field(default_factory=dict)
    settled_total: int = 0
    refused: int = 0


def parse_counters(text: str, at: float) -> PodCounters:
    """One worker's exposition into the counters the operator uses; absent series count as 0."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    return PodCounters(
        at=at,
        in_flight=values.get(IN_FLIGHT, 0.0),
        busy_slot_seconds=values.get(BUSY_SLOT_SECONDS, 0.0),
        settled=sum(values.get(name, 0.0) for name in SETTLED),
        refused=values.get(REFUSED, 0.0),
    )


def _is_ready(pod: Any) -> bool:
    conditions = pod.status.conditions or []
    return pod.metadata.deletion_timestamp is None and any(c.type == "Ready" and c.status == "True" for c in conditions)


class WorkerScraper:
    def __init__(self, api: client.ApiClient, namespace: str, selector: Mapping[str, str], port: int) -> None:
        self._core = client.CoreV1Api(api)
        self._namespace = namespace
        self._selector = ",".join(f"{k}={v}" for k, v in selector.items())
        self._port = port
        self._previous: dict[str, PodCounters] = {}
        self._settled_total = 0.0
        self._session: aiohttp.ClientSession | None = None
        # Creation timestamps are whole seconds: a pod made in our first second counts as ours.
        self._since = datetime.datetime.now(datetime.UTC).replace(microsecond=0)

    async def read(self) -> PoolFigures:
        pods = await self._core.list_namespaced_pod(self._namespace, label_selector=self._selector)
        running = [p for p in pods.items if p.status.pod_ip and p.status.phase == "Running"]
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS))
        answers = await asyncio.gather(*(self._scrape(p.status.pod_ip) for p in running))
        current: dict[str, PodCounters] = {}
        ready = in_flight = 0
        mean = refused = 0.0
        per_pod: dict[str, int] = {}
        for pod, counters in zip(running, answers, strict=True):
            if counters is None:
                continue
            name = pod.metadata.name
            current[name] = counters
            ready += _is_ready(pod)
            per_pod[name] = round(counters.in_flight)
            in_flight += per_pod[name]
            before = self._previous.get(name)
            restarted = before is not None and counters.settled < before.settled
            if before is None or restarted or counters.at <= before.at:
                mean += counters.in_flight  # no interval to average over yet: the sample stands in
                if restarted or (before is None and pod.metadata.creation_timestamp >= self._since):
                    self._settled_total += counters.settled  # a process that started under our watch
                    refused += counters.refused
                continue
            elapsed = counters.at - before.at
            mean += max(counters.busy_slot_seconds - before.busy_slot_seconds, 0.0) / elapsed
            self._settled_total += counters.settled - before.settled
            refused += max(counters.refused - before.refused, 0.0)
        self._previous = current
        return PoolFigures(
            answered=len(current),
            ready_answered=ready,
            in_flight=in_flight,
            mean_in_flight=mean,
            per_pod=per_pod,
            settled_total=round(self._settled_total),
            refused=round(refused),
        )

    async def _scrape(self, ip: str) -> PodCounters | None:
        assert self._session is not None
        try:
            host = f"[{ip}]" if ":" in ip else ip
            async with self._session.get(f"http://{host}:{self._port}/metrics") as answer:
                if answer.status != 200:
                    return None
                text = await answer.text()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None
        return parse_counters(text, time.monotonic())

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
