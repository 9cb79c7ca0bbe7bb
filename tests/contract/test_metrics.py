"""Every metric name in the contract is a series the worker exposes, and the operator reads the worker's own text."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from swell_contract import metrics as names
from swell_operator.worker_metrics import parse_counters
from swell_worker import metrics


def exposed() -> tuple[str, dict[str, float]]:
    text = metrics.exposition()[0].decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + float(sample.value)
    return text, samples


def test_every_contract_name_is_a_worker_series() -> None:
    text, _ = exposed()
    families = {family.name for family in text_string_to_metric_families(text)}
    contract = {value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)}
    assert contract <= families, contract - families


def test_the_operator_reads_what_the_worker_counts() -> None:
    _, before = exposed()
    metrics.TASKS_SUCCEEDED.inc(3)
    metrics.TASKS_DEAD_LETTERED.labels(reason="malformed").inc(2)
    metrics.PUSHES_REFUSED.inc()
    metrics.record_in_flight(5, 8)
    text, after = exposed()
    counters = parse_counters(text, at=1.0)
    settled_before = before.get(names.sample(names.TASKS_SUCCEEDED), 0.0) + before.get(
        names.sample(names.TASKS_DEAD_LETTERED), 0.0
    )
    assert counters.settled - settled_before == 5
    assert counters.refused - before.get(names.sample(names.PUSHES_REFUSED), 0.0) == 1
    assert counters.in_flight == 5
    assert names.sample(names.BUSY_SLOT_SECONDS) in after and counters.busy_slot_seconds >= 0
    metrics.record_in_flight(0, 8)
