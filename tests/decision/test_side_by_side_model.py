"""The simulator's models against the committed real run of bench/keda_side_by_side.py (no cluster)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from bench import keda_side_by_side as side_by_side

RECORDED = side_by_side.RESULTS / "keda_side_by_side.json"
COMPARED = side_by_side.RESULTS / "keda_side_by_side_model.json"


@pytest.fixture(scope="module")
def report() -> dict[str, object]:
    return dict(json.loads(RECORDED.read_text()))


def test_the_trace_as_submitted_matches_the_recorded_stream(report: dict[str, object]) -> None:
    """While no Swell pod was ready and nothing was in flight in the burst, the stream's length is what the
    driver had submitted, and the reconstruction puts exactly that many tasks of the burst before each sample."""
    submitted = side_by_side.recorded_trace(report)
    planned = side_by_side.make_trace(1)
    assert [s for _, s in submitted] == [s for _, s in planned]  # same tasks, same order
    assert all(t >= p for (t, _), (p, _) in zip(submitted, planned, strict=True))  # only ever later
    timeline = report["timeline"]
    assert isinstance(timeline, list)
    for sample in timeline:
        if 243 < sample["t"] < 272 and sample["ready"]["swell"] == 0 and sample["stream"]["swell"]["pending"] == 0:
            since_gap = sum(1 for t, _ in submitted if 240 <= t <= sample["t"] + 1e-9)
            assert since_gap == sample["stream"]["swell"]["length"], sample["t"]
    assert sum(1 for t, _ in planned if 240 <= t <= 270.03) > 250  # the burst: 300 tasks planned by 270 s


def test_the_committed_comparison_reproduces_from_the_committed_run(report: dict[str, object]) -> None:
    committed = json.loads(COMPARED.read_text())
    decision = side_by_side.decision_at(committed["swell_decision_commit"])
    fresh = side_by_side.compare_recorded(report, decision)
    assert fresh["task_overhead_seconds"] == committed["task_overhead_seconds"]
    for side in ("keda", "swell"):
        assert fresh["models"][side]["model_replica_seconds"] == committed["models"][side]["model_replica_seconds"]
        assert fresh["models"][side]["within_bound"] == (abs(fresh["models"][side]["error"]) <= 0.15)


def test_the_recorded_command_has_the_arguments_of_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the shell, ``main`` gets no argv and reads sys.argv: a run with ``--seed 2`` was recorded as
    the plain command, which reproduces seed 1."""
    assert side_by_side.recorded_command(["--seed", "2"]) == f"{side_by_side.COMMAND} --seed 2"
    monkeypatch.setattr("sys.argv", ["keda_side_by_side.py", "--seed", "2", "--out-dir", "x"])
    assert side_by_side.recorded_command(None) == f"{side_by_side.COMMAND} --seed 2 --out-dir x"
    assert side_by_side.recorded_command([]) == side_by_side.COMMAND


def test_the_pool_and_its_model_share_the_scaling_settings_of_the_run() -> None:
    """A run at a 1 s budget deploys a WorkerPool with it and simulates Swell with it; a recorded run's own
    settings drive its model (a comparison on the defaults would model another pool)."""
    scaling = {**side_by_side.SWELL_SCALING, "targetWaitSeconds": 1.0}
    pool = side_by_side.worker_pool("swell-worker:test", scaling)
    assert pool["spec"]["scaling"]["targetWaitSeconds"] == 1.0
    assert side_by_side.model_swell(pool["spec"]["scaling"]).target_wait_seconds == 1.0
    assert side_by_side.model_swell().target_wait_seconds == side_by_side.SWELL_SCALING["targetWaitSeconds"]


def test_heavy_tailed_service_times_keep_the_arrivals_and_have_the_policy_traces_shape() -> None:
    """``--service-times lognormal`` gives the tasks the policy bench's heavy-tailed service times (median
    0.6 s, mean about 1 s, a tail of tasks over 10 s) at the very instants of the uniform trace, so the two
    runs differ in their tasks only; a cap keeps the run finite."""
    uniform = side_by_side.make_trace(1)
    heavy = side_by_side.make_trace(1, service_times="lognormal")
    assert [t for t, _ in heavy] == [t for t, _ in uniform]
    seconds = [s for _, s in heavy]
    assert 0.5 < statistics.median(seconds) < 0.7
    assert 0.8 < statistics.mean(seconds) < 1.3
    assert 10.0 < max(seconds) <= side_by_side.SERVICE_CAP_SECONDS
    assert side_by_side.make_trace(1, service_times="lognormal") == heavy  # seeded
    with pytest.raises(ValueError, match="service times"):
        side_by_side.make_trace(1, service_times="gamma")


def test_a_recorded_run_is_rebuilt_with_its_own_service_times() -> None:
    report = {"trace": {"seed": 1, "service_times": "lognormal"}}
    assert side_by_side.nominal_trace(report) == side_by_side.make_trace(1, service_times="lognormal")
    assert side_by_side.nominal_trace({"trace": {"seed": 2}}) == side_by_side.make_trace(2)  # older runs


def test_the_keda_model_is_reported_over_the_phases_of_its_loops(report: dict[str, object]) -> None:
    """Where KEDA's poll and the HPA's sync fell against the trace is not recorded: the comparison reports
    the model over evenly spaced phases of both loops, of which phase 0 is the headline model."""
    compared = side_by_side.compare_recorded(report)
    keda = compared["models"]["keda"]
    spread = keda["over_loop_phases"]
    assert spread["phases"] == side_by_side.KEDA_LOOP_PHASES
    assert len(spread["replica_seconds"]) == len(spread["wait_p95_s"]) == side_by_side.KEDA_LOOP_PHASES
    assert spread["replica_seconds"][0] == keda["model_replica_seconds"]
    assert min(spread["replica_seconds"]) < max(spread["replica_seconds"])  # the phase moves the result
    low, high = min(spread["replica_seconds"]), max(spread["replica_seconds"])
    assert spread["real_within_range"] == (low <= keda["real_replica_seconds"] <= high)
    assert "over_loop_phases" not in compared["models"]["swell"]  # Swell's loop starts with the work


def test_compare_recorded_reads_the_run_it_is_given(tmp_path: Path) -> None:
    """``--compare-recorded PATH`` compares the models with that run and writes next to ``--out-dir``."""
    run = side_by_side.RESULTS / "keda_side_by_side_seed2" / "keda_side_by_side.json"
    assert side_by_side.main(["--compare-recorded", str(run), "--out-dir", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "keda_side_by_side_model.json").read_text())
    assert written["recorded"] == str(run.relative_to(side_by_side.ROOT))
    assert written["command"] == f"{side_by_side.COMMAND} --compare-recorded {written['recorded']}"
    recorded = json.loads(run.read_text())
    assert written["models"]["swell"]["real_replica_seconds"] == recorded["sides"]["swell"]["replica_seconds_pods"]
